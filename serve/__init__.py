"""Ray Serve application: added by a later issue."""
