"""A local stand-in for RunPod's serverless REST API (api.runpod.ai/v2/{endpoint_id}/...) that runs the real handler.

`jobs` holds the queue and the job state machine, `models` the wire bodies, `app` the FastAPI routes; `serve.py`
builds the engine and starts it.
"""
