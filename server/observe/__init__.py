"""What the server tells its operator: log lines (one format for Easel and uvicorn) and Prometheus metrics."""
