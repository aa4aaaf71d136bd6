"""Neural models: the score-image RQ-VAE (``rqvae``) and the shared weight files (``weights``).

Models take plain keyword arguments (``build_*`` turns a frozen config into them);
weights are saved as safetensors plus a JSON record that pins kind, format version
and config, so a file is never loaded into the wrong model and never unpickled.
"""
