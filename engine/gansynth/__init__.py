"""The GANSynth model: configs, the spectral pipeline, the network, model files, the latent
prior, `Synth` / `load_synth`, rainbowgrams; `magenta/` reads Magenta's own checkpoints.

The bottom wing: imports only `engine.util` (and its own modules). Everything else in
`engine` and `app` may import it.
"""
