"""HTTP routes beside the Gradio app on the same server: the OpenAI-compatible API (openai_compat.py: the routes;
edge.py: caller, limits and errors; naming.py: which model a request names; generation.py: choices with stop
strings; formats.py: OpenAI's shapes)."""
