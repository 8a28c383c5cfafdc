"""Local stand-ins for AWS and PostHog: the embedded default and the end-to-end tests."""
