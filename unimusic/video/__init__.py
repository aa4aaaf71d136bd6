"""Video ingestion: score-following videos in, slides, audio spans and staff systems out."""
