"""unimusic: translate music between score images, symbolic scores, MIDI and audio."""
__version__ = "0.1.0"
