"""Two-round human-AI reader study: set-up, web app, durable storage and paired analysis."""
