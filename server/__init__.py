"""HTTP routes beside the Gradio app on the same server: the OpenAI-compatible API."""
