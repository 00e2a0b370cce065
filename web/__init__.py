"""The war room: a live web view and an HTTP JSON API over the pipeline's topics and Redis (``repmon web``)."""
