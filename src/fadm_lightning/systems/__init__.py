"""The LightningModules ("systems"): each wires ready-built networks into training, validation and
test steps. ``fadm`` trains the AGCN-conditioned denoiser (eq. 11), ``distill`` a few-step student
of a trained FADM, ``fomm`` pretrains the FOMM coarse generator."""
