"""Typed settings, read once from environment variables and command-line flags."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

ENV_PREFIX = "LORA_STUDIO_"
LOCAL_USER = "local"  # who owns everything when the app has no accounts (DESIGN.md §2)


def _default_data_dir() -> Path:
    # A Space with persistent storage mounts /data; everything else keeps data beside the app.
    if os.environ.get("SPACE_ID") and Path("/data").is_dir():
        return Path("/data/lora-studio")
    return Path("data")


def _default_host() -> str:
    # A Space reaches the app from outside its container; everywhere else only this machine does by default.
    return "0.0.0.0" if os.environ.get("SPACE_ID") else "127.0.0.1"


@dataclass
class Settings:
    host: str = field(default_factory=_default_host)  # interface the web server binds to; 0.0.0.0 on a Space
    port: int = 7860  # web server port
    data_dir: Path = field(default_factory=_default_data_dir)  # models, adapters, jobs and collections live under it
    state_dir: str = ""  # SQLite databases (jobs, feedback) on a disk where file locking works ("" = the data dir)
    chat_model: str = ""  # default chat backbone ("" = the catalog default)
    embedding_model: str = ""  # default sentence-embedding backbone ("" = the catalog default)
    username: str = ""  # with a password: the UI asks for a login
    password: str = ""
    api_key: str = ""  # without accounts: the key the /v1 routes ask for ("" = none; with accounts each user has keys)
    concurrency: int = 4  # requests the queue runs at once (chat requests share one batched engine)
    memory_budget_gb: float = 8.0  # loaded models beyond this are evicted, least recently used first
    threads: int = 0  # torch CPU threads (0 = all cores)
    dtype: str = "auto"  # auto (bf16 on a capable GPU, else fp32), float32 or bfloat16
    decode_kernels: str = "auto"  # auto (the fastest product per layer, measured at load) or plain (the library's)
    speculative: bool = True  # chat drafts from the prompt checked in one pass: same answers, copying ones faster
    serve_backend: str = ""  # an OpenAI-compatible server that chat and completion run on ("" = this machine)
    serve_api_key: str = ""  # the key that server expects
    serve_adapter_dir: str = ""  # a folder that server also reads, where adapters are copied for it
    train_processes: int = 0  # processes a training job runs on (0 = one per visible GPU, else 1)
    trust_remote_code: bool = False  # operator opt-in only: lets hub models run their own code
    max_upload_mb: int = 20  # the largest file a user may upload
    context_limit: int = 0  # cap on a model's context in tokens (0 = the model's own); bounds prompt cost on CPU
    # Limits that keep one user from starving or breaking the others (each says so in one sentence when hit).
    max_chars: int = 100_000  # characters of text one request may bring (a message with its history, a document)
    max_history: int = 200  # chat messages of history read per reply (older ones are left out, and it says so)
    summary_sentences: int = 2_000  # sentences an extractive summary ranks (more are sampled evenly across the text)
    lines_in_flight: int = 4  # pieces one translation or summary keeps in the generation engine at once
    jobs_per_user: int = 3  # training and evaluation jobs one user may have waiting or running
    max_train_steps: int = 20_000  # the most optimizer steps one training job may take
    max_eval_rows: int = 1_000  # rows one evaluation may score (each variant answers each row)
    estimates: int = 1  # pre-flight estimates running at once (each loads a model in a subprocess)
    queue_size: int = 100  # requests waiting in the server's queue before new ones are turned away
    api_requests_per_user: int = 8  # generations one user may have running through the /v1 routes at once
    mcp: bool = False  # also serve the public API as MCP tools at /gradio_api/mcp/ (read-only ones, see ui/mcp.py)
    mcp_write_tools: bool = False  # operator opt-in: training, deleting, renaming, pushing... become MCP tools too

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).expanduser()
        if not 0 < self.port < 65536:
            raise ValueError(f"port must be between 1 and 65535, not {self.port}")
        if self.dtype not in ("auto", "float32", "bfloat16"):
            raise ValueError(f"dtype must be auto, float32 or bfloat16, not {self.dtype!r}")
        if self.decode_kernels not in ("auto", "plain"):
            raise ValueError(f"decode-kernels must be auto or plain, not {self.decode_kernels!r}")
        if bool(self.username) != bool(self.password):
            raise ValueError("set both a username and a password, or neither")
        if self.concurrency < 1 or self.memory_budget_gb <= 0 or self.max_upload_mb < 1:
            raise ValueError("concurrency, memory budget and upload limit must be positive")
        if self.train_processes < 0:
            raise ValueError(f"train-processes must be 0 (one per GPU) or more, not {self.train_processes}")
        limits = ("max_chars", "max_history", "summary_sentences", "lines_in_flight", "jobs_per_user",
                  "max_train_steps", "max_eval_rows", "estimates", "queue_size", "api_requests_per_user")
        for name in limits:
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be at least 1, not {getattr(self, name)}")

    @property
    def auth(self) -> tuple[str, str] | None:
        return (self.username, self.password) if self.username else None

    def state_path(self, *parts: str) -> Path:
        """A folder for the SQLite databases: --state-dir (local disk, where SQLite's locking works) when the data
        directory is a mounted bucket, else under the data directory. Created on first use."""
        root = Path(self.state_dir).expanduser() if self.state_dir else self.data_dir
        folder = root.joinpath(*parts)
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def path(self, *parts: str) -> Path:
        """A folder under the data directory, created on first use."""
        folder = self.data_dir.joinpath(*parts)
        folder.mkdir(parents=True, exist_ok=True)
        return folder


_HELP = {
    "host": "interface to bind (0.0.0.0 to serve the network)",
    "port": "port of the web UI",
    "data_dir": "where models, adapters, jobs and collections are stored (on a Space: the Storage Bucket's mount)",
    "state_dir": "where the SQLite databases live, on a local disk where file locking works (empty: the data "
                 "directory; set it when the data directory is a mounted bucket)",
    "chat_model": "default chat backbone: a catalog name, hub id or local folder",
    "embedding_model": "default embedding backbone: a catalog name, hub id or local folder",
    "username": "login name for the UI (with --password)",
    "password": "login password for the UI (with --username)",
    "api_key": "without accounts: a key the OpenAI-compatible /v1 routes require (Authorization: Bearer KEY)",
    "concurrency": "requests served at once",
    "memory_budget_gb": "memory for loaded models before the least recently used is unloaded",
    "threads": "CPU threads for torch (0 = all cores)",
    "dtype": "weights dtype: auto, float32 or bfloat16",
    "serve_backend": "URL of an OpenAI-compatible server (vLLM, SGLang, another LoRA Studio) that chat and completion "
                     "run on; empty: this machine",
    "serve_api_key": "API key the serving backend expects (sent as Authorization: Bearer KEY)",
    "serve_adapter_dir": "a folder the serving backend also reads, where adapters are copied for it to load "
                         "(empty: their own folders, for a backend on this machine)",
    "decode_kernels": "chat decode products: auto (measured at load on this machine: fp16 weight copies or another "
                      "layout where faster, a lean forward pass on Llama and Qwen2 models; answers checked in "
                      "bench/decode.py) or plain (the library's fp32 products and the model's own forward)",
    "speculative": "speculative decoding from prompt lookups (the same answers; those that quote their prompt come "
                   "faster)",
    "train_processes": "processes a training job runs on, data-parallel (0 = one per visible GPU, else 1; on CPUs "
                       "they share the cores)",
    "trust_remote_code": "allow hub models to run their own code (off unless you trust them)",
    "max_upload_mb": "largest accepted upload in MB",
    "context_limit": "cap on the tokens a model reads at once (0 = the model's own limit)",
    "max_chars": "characters of text one request may bring (a message with its history, a document)",
    "max_history": "chat messages of history read per reply (older ones are left out)",
    "summary_sentences": "sentences an extractive summary ranks (more are sampled evenly)",
    "lines_in_flight": "pieces one translation or summary keeps in the generation engine at once",
    "jobs_per_user": "training and evaluation jobs one user may have waiting or running",
    "max_train_steps": "the most optimizer steps one training job may take",
    "max_eval_rows": "rows one evaluation may score (each variant answers each row)",
    "estimates": "pre-flight training estimates running at once",
    "queue_size": "requests waiting in the server's queue before new ones are turned away",
    "api_requests_per_user": "generations one user may run at once through the /v1 routes",
    "mcp": "serve the read-only operations (the six tasks, Inside the model, adapters and collections) as MCP tools "
           "at /gradio_api/mcp/; with accounts a call needs an API key (Authorization: Bearer KEY)",
    "mcp_write_tools": "also offer training, deleting, renaming, pushing and the other changes as MCP tools",
}


def _convert(kind: type, text: str):
    if kind is bool:
        return text.strip().lower() in ("1", "true", "yes", "on")
    return kind(text)


def _field_type(name: str) -> type:
    defaults = Settings()
    return type(getattr(defaults, name))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per setting; each defaults to its environment variable, then to the dataclass default."""
    for f in fields(Settings):
        kind = _field_type(f.name)
        env = ENV_PREFIX + f.name.upper()
        default = _convert(kind, os.environ[env]) if env in os.environ else getattr(Settings(), f.name)
        flag = "--" + f.name.replace("_", "-")
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default,
                                help=f"{_HELP[f.name]} (env {env})")
        else:
            parser.add_argument(flag, type=kind if kind is not Path else str, default=default,
                                help=f"{_HELP[f.name]} (env {env}, default {default})")


def from_namespace(ns: argparse.Namespace) -> Settings:
    return Settings(**{f.name: getattr(ns, f.name) for f in fields(Settings)})


def parse(argv: list[str], prog: str, description: str | None) -> Settings:
    """Settings from command-line flags (the environment's defaults under them); a wrong one exits with usage."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    add_arguments(parser)
    try:
        return from_namespace(parser.parse_args(argv))
    except ValueError as error:
        parser.error(str(error))
