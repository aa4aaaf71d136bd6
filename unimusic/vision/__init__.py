"""Score images: staff systems on pages (OpenCV) and the one crop normalization."""
