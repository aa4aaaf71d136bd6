"""Ray Data and Ray Train jobs (corpus build, tokenize, train): added by later issues."""
