"""Prefect flows: thin orchestration over the pointdistill library."""
