"""`akshara-hf serve FOLDER`: one model folder behind transformers' OpenAI-compatible chat server, requests checked.

The serving is transformers' (`transformers serve`'s `ModelManager`, `ChatCompletionHandler`, `generate`, streaming,
the chat template and the folder's `generation_config`); three things are ours:

* **Loading.** `PinnedModelManager` is transformers' `ModelManager` with its two loading hooks going through
  `akshara_hf.loading`: the trust rule (no Python from the folder without `--trust-remote-code`), the folder checked
  before anything loads, one line for a broken one (transformers' own path resolves the class with
  `getattr(transformers, config.architectures[0])`, which cannot find `AksharaForCausalLM`, and prints its load
  report). An Akshara folder's chat template must render nanochat's layout (`check_chat_template`, bounded in time
  and memory); prompts are then rendered with the package's own template, the same layout in bounded time.
* **The app.** `transformers serve`'s app also routes `/load_model` (loads any model, pinned or not), `/reset` (unloads
  the pinned one), `/v1/completions` (a raw prompt, where control-token text becomes control tokens), `/v1/responses`
  and others, and `GET /v1/models` scans the whole Hub cache. `build_app` routes only `GET /health`, `GET /v1/models`
  (the pinned model) and `POST /v1/chat/completions`; everything else is a 404.
* **Validation.** `check_chat_request` refuses a malformed request with a 4xx in OpenAI's error shape before
  anything generates (transformers' handler would raise deep inside and answer 500 with a traceback in the log); it
  renders the prompt with the chat template as the handler will, so the template's own refusals (control-
  token text in a message, roles out of order) and the context length are checked too. Only `chat_template_kwargs`
  that cannot change the template or the tokenization pass (`ALLOWED_TEMPLATE_KWARGS`).
"""

import json
import math
import sys
import uuid

from akshara_hf.errors import AksharaError, one_line

ROLES = ("system", "user", "assistant")
MESSAGE_KEYS = {"role", "content", "name"}  # `name` is accepted and, as transformers does, not rendered
# Passed to apply_chat_template as is; everything else there could replace the template (`chat_template`), its
# rendering (`add_generation_prompt`, `continue_final_message`, `tools`, `documents`) or the tokenization (`tokenize`,
# `return_*`, `tokenizer_kwargs`, `split_special_tokens`, ...), so it is refused.
ALLOWED_TEMPLATE_KWARGS = {"sanitize_control_tokens": bool}
# Fields the OpenAI schema has that change nothing in the reply here: accepted when they have OpenAI's type, and
# dropped before the handler (which would log a warning for each). `stream_options.include_usage` holds anyway: the
# last streamed chunk carries the usage.
IGNORED_FIELDS = ("user", "metadata", "store", "service_tier", "stream_options", "parallel_tool_calls")
SERVICE_TIERS = ("auto", "default", "flex", "scale", "priority")
MAX_METADATA = (16, 64, 512)  # OpenAI's limits: pairs, key characters, value characters
# Accepted only with their neutral value (transformers' handler ignores them: any other value would be silently lost).
NEUTRAL_FIELDS = {"n": (1,), "logprobs": (False,), "top_logprobs": (0,), "presence_penalty": (0, 0.0),
                  "modalities": (["text"],), "response_format": ({"type": "text"},)}
# transformers 5.25 rewrote its serving code (ModelManager takes a ModelLoader, no trust_remote_code or device): this
# server subclasses the earlier API, so the serve extra caps transformers below it and `serve` says so before loading
# (5.25.0 was a TypeError traceback at start-up).
SERVING_API_BELOW = "5.25"
MAX_BODY_BYTES = 4 << 20  # a request body larger than this is refused before it is parsed
MAX_STOP = 4  # OpenAI's limit on stop sequences
# transformers' StopStringCriteria precomputes a table over every vocabulary token for each character of a stop string
# (measured ~2 us per token x character: a 1M-character stop string would take days at a 65,536-token vocabulary).
MAX_STOP_CHARS = 32


class RequestError(Exception):
    """A refused request: HTTP status and OpenAI's error fields."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None, status: int = 400):
        super().__init__(message)
        self.message, self.param, self.code, self.status = message, param, code, status


def error_body(message: str, param: str | None = None, code: str | None = None,
               kind: str = "invalid_request_error") -> dict:
    """OpenAI's error shape, message on one line."""
    return {"error": {"message": one_line(message, limit=1000), "type": kind, "param": param, "code": code}}


def _number(body: dict, key: str, low: float, high: float, low_open: bool = False, integer: bool = False,
            name: str | None = None):
    """body[key] checked to be a number (an integer) in the range; None when absent. `name`: how errors call it."""
    value, name = body.get(key), name or key
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        raise RequestError(f"{name} must be {'an integer' if integer else 'a number'}, got {json.dumps(value)}",
                           name, "invalid_type")
    finite = isinstance(value, int) or math.isfinite(value)  # NaN and Infinity parse from JSON too
    if not (finite and (low < value if low_open else low <= value) and value <= high):
        bound = f"{'above' if low_open else 'at least'} {low}" + ("" if high == math.inf else f" and at most {high}")
        raise RequestError(f"{name} must be {bound}, got {value}", name, "invalid_value")
    return value


def _messages(body: dict) -> list[dict]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("messages must be a non-empty list of {role, content} objects", "messages",
                           "invalid_type" if messages is not None else "missing_required_parameter")
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise RequestError(f"{where} must be an object with role and content", where, "invalid_type")
        extra = sorted(set(message) - MESSAGE_KEYS)
        if extra:
            raise RequestError(f"{where}: {', '.join(extra)} not supported (this model has no tools or function "
                               "calls; a message has role, content and optionally name)", f"{where}.{extra[0]}",
                               "unsupported_parameter")
        role = message.get("role")
        if role not in ROLES:
            raise RequestError(f"{where}.role must be one of {', '.join(ROLES)}, got {json.dumps(role)}",
                               f"{where}.role", "invalid_value")
        if "name" in message and not isinstance(message["name"], str):
            raise RequestError(f"{where}.name must be a string, got {json.dumps(message['name'])}", f"{where}.name",
                               "invalid_type")
        content = message.get("content")
        if isinstance(content, list):
            for part_index, part in enumerate(content):
                if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
                        and set(part) == {"type", "text"}):
                    raise RequestError(f"{where}.content[{part_index}] must be {{\"type\": \"text\", \"text\": "
                                       "string}} (this model reads text only)", f"{where}.content", "invalid_value")
        elif not isinstance(content, str):
            raise RequestError(f"{where}.content must be a string or a list of text parts, got "
                               f"{json.dumps(content)}", f"{where}.content", "invalid_type")
    return messages


def _check_ignored_fields(body: dict) -> None:
    """The ignored fields have OpenAI's types and limits: a junk value is refused as OpenAI refuses it, not dropped."""
    def refuse(key: str, expected: str):
        raise RequestError(f"{key} must be {expected}, got {one_line(json.dumps(body[key]), limit=80)}", key,
                           "invalid_type")

    for key in ("user", "service_tier"):
        if body.get(key) is not None and not isinstance(body[key], str):
            refuse(key, "a string")
    if body.get("service_tier") is not None and body["service_tier"] not in SERVICE_TIERS:
        refuse("service_tier", f"one of {', '.join(SERVICE_TIERS)}")
    for key in ("store", "parallel_tool_calls"):
        if body.get(key) is not None and not isinstance(body[key], bool):
            refuse(key, "true or false")
    metadata = body.get("metadata")
    if metadata is not None:
        pairs, key_chars, value_chars = MAX_METADATA
        if not (isinstance(metadata, dict) and len(metadata) <= pairs and all(
                len(k) <= key_chars and isinstance(v, str) and len(v) <= value_chars for k, v in metadata.items())):
            refuse("metadata", f"an object of at most {pairs} string pairs (keys up to {key_chars} characters, "
                               f"values up to {value_chars})")
    options = body.get("stream_options")
    if options is not None:
        if not (isinstance(options, dict) and set(options) <= {"include_usage", "include_obfuscation"}
                and all(isinstance(value, bool) for value in options.values())):
            refuse("stream_options", "an object of include_usage: true or false")
        if body.get("stream") is not True:
            raise RequestError("stream_options is only allowed when stream is true", "stream_options",
                               "invalid_value")


def _template_kwargs(body: dict) -> dict:
    kwargs = body.get("chat_template_kwargs")
    if kwargs is None:
        return {}
    if not isinstance(kwargs, dict):
        raise RequestError("chat_template_kwargs must be an object", "chat_template_kwargs", "invalid_type")
    for key, value in kwargs.items():
        if key not in ALLOWED_TEMPLATE_KWARGS:
            raise RequestError(f"chat_template_kwargs.{key} is not accepted: only "
                               f"{', '.join(sorted(ALLOWED_TEMPLATE_KWARGS))} may be set (the model's chat template "
                               "and tokenization are fixed)", f"chat_template_kwargs.{key}", "unsupported_parameter")
        if not isinstance(value, ALLOWED_TEMPLATE_KWARGS[key]):
            raise RequestError(f"chat_template_kwargs.{key} must be a {ALLOWED_TEMPLATE_KWARGS[key].__name__}",
                               f"chat_template_kwargs.{key}", "invalid_type")
    return dict(kwargs)


def prompt_ids(messages: list[dict], tokenizer, template_kwargs: dict) -> list[int]:
    """The prompt exactly as transformers' chat handler builds it (content parts joined, the folder's template, a
    generation prompt); a template refusal is a RequestError."""
    from transformers.cli.serving.utils import BaseHandler, Modality

    inputs = BaseHandler.get_processor_inputs_from_messages(messages, Modality.LLM)
    try:
        rendered = tokenizer.apply_chat_template(inputs, add_generation_prompt=True, tokenize=True, return_dict=True,
                                                 **template_kwargs)
    except Exception as error:  # jinja2's TemplateError from the template's raise_exception, or the tokenizer's
        raise RequestError(f"messages: {one_line(error)}", "messages", "invalid_prompt") from None
    return list(rendered["input_ids"])


def check_chat_request(body, *, model_id: str, tokenizer, context: int | None, default_max_tokens: int) -> dict:
    """The request to hand to transformers' chat handler, or a RequestError (see the module docstring).

    The returned body always names `max_tokens` (at most what the context leaves after the prompt), so no reply runs
    past the model's positions."""
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object", None, "invalid_type")
    unknown = sorted(set(body) - {"model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p",
                                  "stream", "seed", "stop", "frequency_penalty", "logit_bias", "chat_template_kwargs",
                                  *IGNORED_FIELDS, *NEUTRAL_FIELDS})
    if unknown:
        hint = {"generation_config": " (the folder's generation_config applies; set max_tokens, temperature, top_p)",
                "tools": " (this model has no tool use)", "functions": " (this model has no function calls)"}
        raise RequestError(f"{unknown[0]} is not supported by this server{hint.get(unknown[0], '')}", unknown[0],
                           "unsupported_parameter")
    for key, neutral in NEUTRAL_FIELDS.items():  # typed: `"n": true` and `"n": 1.0` equal 1 in Python
        value = body.get(key)
        if value is not None and not any(value == v and type(value) is type(v) for v in neutral):
            raise RequestError(f"{key} {json.dumps(body[key])} is not supported (only {json.dumps(neutral[0])})", key,
                               "unsupported_parameter")
    model = body.get("model")
    if model is not None and model != model_id:
        raise RequestError(f"this server is pinned to the model {json.dumps(model_id)}; requested {json.dumps(model)}",
                           "model", "model_not_found")
    if body.get("stream") is not None and not isinstance(body["stream"], bool):
        raise RequestError("stream must be true or false", "stream", "invalid_type")
    _check_ignored_fields(body)
    _number(body, "temperature", 0, 2)
    _number(body, "top_p", 0, 1, low_open=True)
    _number(body, "frequency_penalty", -1, 2, low_open=True)  # transformers maps it to repetition_penalty 1 + value
    _number(body, "seed", 0, 2**63 - 1, integer=True)
    stop = body.get("stop")
    if stop is not None:
        stops = [stop] if isinstance(stop, str) else stop
        if not (isinstance(stops, list) and 0 < len(stops) <= MAX_STOP and all(isinstance(s, str) and s for s in stops)):
            raise RequestError(f"stop must be a non-empty string or a list of 1 to {MAX_STOP} of them", "stop",
                               "invalid_value")
        if any(len(s) > MAX_STOP_CHARS for s in stops):
            raise RequestError(f"stop strings are at most {MAX_STOP_CHARS} characters each", "stop", "invalid_value")
    bias = body.get("logit_bias")
    if bias is not None:
        if not isinstance(bias, dict):
            raise RequestError("logit_bias must be an object of token id -> bias", "logit_bias", "invalid_type")
        for key, value in bias.items():
            if not (key.isascii() and key.isdigit() and int(key) < len(tokenizer)):
                raise RequestError(f"logit_bias: {json.dumps(key)} is not a token id of this model (0 to "
                                   f"{len(tokenizer) - 1})", "logit_bias", "invalid_value")
            _number(bias, key, -100, 100, name=f"logit_bias[{key}]")
    limits = {key: _number(body, key, 1, math.inf, integer=True) for key in ("max_completion_tokens", "max_tokens")}
    template_kwargs = _template_kwargs(body)
    ids = prompt_ids(_messages(body), tokenizer, template_kwargs)
    room = context - len(ids) if context else None
    if room is not None and room < 1:
        raise RequestError(f"the prompt is {len(ids)} tokens; this model's context is {context} tokens, with at least "
                           "one left for the reply", "messages", "context_length_exceeded")
    asked_key = next((key for key, value in limits.items() if value is not None), None)
    if asked_key is not None and room is not None and limits[asked_key] > room:
        raise RequestError(f"{asked_key} {limits[asked_key]} does not fit: the prompt is {len(ids)} tokens and this "
                           f"model's context is {context} (at most {room} new tokens)", asked_key,
                           "context_length_exceeded")
    # null means the default: dropped (the handler spread `"chat_template_kwargs": null` into a call: a 500)
    forwarded = {key: value for key, value in body.items() if value is not None
                 and key not in IGNORED_FIELDS and key not in NEUTRAL_FIELDS and key != "max_completion_tokens"}
    forwarded["max_tokens"] = limits[asked_key] if asked_key else min(default_max_tokens, room or default_max_tokens)
    if bias:  # transformers' sequence_bias takes floats only: `{"293": 100}` was a 500 from inside generation
        forwarded["logit_bias"] = {str(int(key)): float(value) for key, value in bias.items()}  # "01" is token 1
    return forwarded


# ---------------------------------------------------------------------------------------------------------------
# loading


def _model_manager_class():
    from transformers.cli.serving.model_manager import ModelManager

    class PinnedModelManager(ModelManager):
        """transformers' ModelManager for one local folder or Hub repo, loaded through `akshara_hf.loading`."""

        def __init__(self, name: str, source: str, trust_remote_code: bool = False, **kwargs):
            self.source = source  # the hooks below load this; `name` is the model id requests must give
            super().__init__(trust_remote_code=trust_remote_code, force_model=name, **kwargs)

        def _load_processor(self, model_id_and_revision: str, gguf_file: str | None = None):
            from akshara_hf.loading import OUR_MODEL_TYPE, load_config, load_tokenizer, source_file
            from akshara_hf.tokenization.chat import check_chat_template, load_chat_template

            config = load_config(self.source, self.trust_remote_code)  # the config's errors before the tokenizer's
            tokenizer = load_tokenizer(self.source, self.trust_remote_code, config=config)
            if config.model_type == OUR_MODEL_TYPE:
                # A foreign or broken template is refused at start-up; one that renders nanochat's layout on the probes
                # is then replaced by the package's, which renders the same layout on every request in bounded time
                # (a folder's template could still loop, or diverge, on inputs no probe has).
                check_chat_template(tokenizer, source_file(self.source, "chat_template.jinja"))
                tokenizer.chat_template = load_chat_template()
            return tokenizer

        def _load_model(self, model_id_and_revision: str, tqdm_class=None, progress_callback=None,
                        gguf_file: str | None = None):
            from akshara_hf.loading import load_model

            return load_model(self.source, self.trust_remote_code, dtype=self.dtype, device_map=self.device,
                              attn_implementation=self.attn_implementation).eval()

    return PinnedModelManager


def _check_options(device: str, dtype: str) -> None:
    import torch

    if dtype not in ("auto", None) and not isinstance(getattr(torch, dtype, None), torch.dtype):
        raise AksharaError(f"--dtype {dtype}: not a torch dtype (auto, float32, bfloat16, float16)")
    if device != "auto" and not device.isdigit():
        try:
            torch.device(device)
        except (RuntimeError, ValueError) as error:
            raise AksharaError(f"--device {device}: {one_line(error)}") from None


def _check_port(host: str, port: int) -> None:
    """Refuse a port we cannot listen on now, before minutes of loading (uvicorn would say so only afterwards)."""
    import socket

    if not 0 < port < 65536:
        raise AksharaError(f"--port {port}: must be 1 to 65535")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as error:
        raise AksharaError(f"--host {host}: {one_line(error)}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind(address)
        except OSError as error:
            raise AksharaError(f"--host {host} --port {port}: cannot listen there ({one_line(error)})") from None


def check_serving_api(version: str | None = None) -> None:
    """Refuse, in one line, a transformers whose serving code is not the one this server is written against."""
    from packaging.version import Version

    if version is None:
        import transformers

        version = transformers.__version__
    if Version(version).release >= Version(SERVING_API_BELOW).release:
        raise AksharaError(f"transformers {version}: its serving code changed in {SERVING_API_BELOW} and this server "
                           f"is written against the earlier one; install a release below it: "
                           f"pip install 'transformers[serving]<{SERVING_API_BELOW}'")


def load_pinned(folder: str, device: str = "auto", dtype: str = "auto", trust_remote_code: bool = False):
    """transformers' ModelManager holding FOLDER (checked and loaded by `akshara_hf.loading`); AksharaError if not."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging

    from akshara_hf.loading import load_config, resolve_model, source_file

    check_serving_api()
    _check_options(device, dtype)
    source = resolve_model(folder)
    config = load_config(source, trust_remote_code)
    if not trust_remote_code and type(config) not in AutoModelForCausalLM._model_mapping:
        raise AksharaError(f"{source_file(source, 'config.json')}: model_type {config.model_type!r} is not a causal "
                           "language model this installation can load")
    quiet = logging.get_logger("transformers.cli.serving.model_manager")  # its "Loading FOLDER@main" line
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        # pinned to FOLDER as written (`./akshara-tiny`, which a client repeats), loaded from the resolved path
        return _model_manager_class()(str(folder), source, trust_remote_code, device=device, dtype=dtype)
    finally:
        quiet.setLevel(level)


# ---------------------------------------------------------------------------------------------------------------
# the app


async def _read_body(request) -> bytes | None:
    """The request body, or None as soon as it is known to exceed `MAX_BODY_BYTES`: Starlette's `request.body()` reads
    it whole first (an endless chunked upload filled the memory), and uvicorn sets no limit of its own."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def build_app(manager, chat_handler, model_id: str, on_start=None):
    """A FastAPI app with the three routes (see the module docstring), every error in OpenAI's shape."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, HTTPException, Request
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    model, tokenizer = manager.load_model_and_processor(manager.process_model_name(model_id))  # loaded: cached
    context = getattr(model.config, "max_position_embeddings", None)
    default_max_tokens = max(model.generation_config.max_new_tokens or 0, 1024)  # the handler's own default

    @asynccontextmanager
    async def lifespan(app):
        if on_start is not None:
            on_start()
        yield
        manager.shutdown()
        chat_handler.generation_state.shutdown()

    # redirect_slashes off: `POST /v1/chat/completions/` was a 307 to the route, which clients follow as a GET
    app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None, redirect_slashes=False)

    def refuse(message, status=400, param=None, code=None, kind="invalid_request_error"):
        return JSONResponse(error_body(message, param, code, kind), status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException):
        routes = "this server answers POST /v1/chat/completions, GET /v1/models and GET /health"
        if error.status_code in (404, 405):
            what = "not served here" if error.status_code == 404 else "method not allowed"
            return refuse(f"{request.method} {request.url.path}: {what} ({routes})", error.status_code,
                          code="not_found" if error.status_code == 404 else "method_not_allowed")
        return refuse(str(error.detail), error.status_code)

    @app.get("/health")
    def health():
        return JSONResponse({"status": "ok"})

    def model_card():
        return {"id": model_id, "object": "model", "created": 0, "owned_by": "akshara-hf"}

    @app.get("/v1/models")
    def list_models():
        return JSONResponse({"object": "list", "data": [model_card()]})

    @app.get("/v1/models/{name:path}")
    def get_model(name: str):
        if name != model_id:
            return refuse(f"model {json.dumps(name)} is not served here (only {json.dumps(model_id)})", 404, "model",
                          "model_not_found")
        return JSONResponse(model_card())

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        raw = await _read_body(request)
        if raw is None:
            return refuse(f"the request body is over {MAX_BODY_BYTES} bytes", 413, code="request_too_large")
        try:  # UTF-8 only (RFC 8259 section 8.1): json.loads would also guess UTF-16 and UTF-32 from the bytes
            body = json.loads(raw.decode("utf-8"))
        except (ValueError, RecursionError) as error:  # not UTF-8, not JSON, nested too deeply
            return refuse(f"the request body is not JSON ({one_line(error)})", code="invalid_json")
        try:
            body = check_chat_request(body, model_id=model_id, tokenizer=tokenizer, context=context,
                                      default_max_tokens=default_max_tokens)
        except RequestError as error:
            return refuse(error.message, error.status, error.param, error.code)
        request_id = request.headers.get("x-request-id") or str(uuid.uuid4())
        try:
            return await chat_handler.handle_request(body, request_id)
        except HTTPException as error:  # the handler's own checks
            return refuse(str(error.detail), error.status_code)
        except Exception as error:  # a failure inside generation: one line here and in the log, no traceback
            message = f"generation failed ({type(error).__name__}: {one_line(error)})"
            print(f"akshara-hf serve: error: request {request_id}: {message}", file=sys.stderr, flush=True)
            return refuse(message, 500, kind="server_error")

    return app


def serve(folder: str, host: str = "127.0.0.1", port: int = 8000, device: str = "auto", dtype: str = "auto",
          trust_remote_code: bool = False, compile: bool = False, log_level: str = "warning") -> None:
    """Check FOLDER and the address, load, and serve until interrupted."""
    check_serving_api()  # before importing its serving modules, which 5.25 renamed
    import uvicorn
    from transformers.cli.serving.chat_completion import ChatCompletionHandler
    from transformers.cli.serving.utils import GenerationState
    from transformers.utils import logging

    _check_port(host, port)
    logging.get_logger("transformers").setLevel(logging.log_levels.get(log_level.lower(), logging.WARNING))
    manager = load_pinned(folder, device, dtype, trust_remote_code)
    handler = ChatCompletionHandler(model_manager=manager, generation_state=GenerationState(compile=compile))
    shown = f"[{host}]" if ":" in host else host

    def started():
        print(f"akshara-hf serve: {folder} at http://{shown}:{port}/v1 (OpenAI chat completions; model "
              f"{json.dumps(manager.force_model)}; Ctrl-C stops)", flush=True)

    app = build_app(manager, handler, manager.force_model, on_start=started)
    uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level.lower())).run()
    print("akshara-hf serve: stopped", file=sys.stderr, flush=True)  # (a signal ignored by the shell, SIGTERM aside)


def register(subparsers) -> None:
    from akshara_hf.loading import add_trust_flag

    p = subparsers.add_parser(
        "serve", help="serve a model folder with transformers' OpenAI-compatible server (/v1/chat/completions)")
    p.add_argument("folder", help="model folder or Hub repo id")
    p.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--device", default="auto", help="e.g. cpu, cuda:0 (default: auto)")
    p.add_argument("--dtype", default="auto", help="default: the folder's dtype")
    add_trust_flag(p)
    p.add_argument("--compile", action="store_true", help="static cache + torch.compile (transformers' flag)")
    p.add_argument("--log-level", default="warning", choices=("debug", "info", "warning", "error", "critical"))
    p.set_defaults(func=_main)


def _main(args) -> int:
    try:
        serve(args.folder, args.host, args.port, args.device, args.dtype, args.trust_remote_code, args.compile,
              args.log_level)
    except KeyboardInterrupt:  # Ctrl-C, while loading or serving (uvicorn re-raises it after a clean shutdown)
        print("akshara-hf serve: stopped", file=sys.stderr, flush=True)
        return 130
    return 0
