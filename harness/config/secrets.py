"""Redaction of secrets before anything is written: records, `meta_info.argv`, W&B config and metadata.

Two independent signals, because either alone misses cases:
  * the key: a value under a secret-looking key (`hf_token`, `wandb.api_key`, `--password`) is a
    secret whatever it looks like (a W&B key is plain 40-hex, just like a git sha);
  * the value: a string shaped like a well-known token (`hf_...`, `sk-...`, `ghp_...`) is a secret
    under whatever key it was passed (`model.tiny={note: hf_...}`, a bare argv item).
Keys are matched on their name components, not substrings, so ordinary keys that merely contain a
secret-ish substring (`max_new_tokens`, `pad_token_id`, `author`, `keep_last`) pass through.
Pure functions, no I/O: called by harness.record.env and harness.record.tracking.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

REDACTED = "<redacted>"

# Components that make a key secret wherever they appear in it (`client_secret_file` included:
# redacting a harmless value costs nothing, leaking a secret costs a rotation).
ANYWHERE = frozenset({"secret", "secrets", "password", "passwords", "passwd", "credential", "credentials",
                      "apikey", "authorization"})
# Components that are secret only as the key's last component: `hf_token` or `auth` is a secret,
# `token_count`, `auth_method` or `pad_token_id` is not.
LAST = frozenset({"token", "auth"})
# Two-component endings: `api_key`, `wandb_api_key`, `private_key`, `aws_access_key`.
PAIRS = frozenset({("api", "key"), ("private", "key"), ("access", "key")})
# Tokenizer special tokens (`pad_token: "<pad>"`) are configuration, not credentials.
SPECIAL_TOKENS = frozenset({"pad", "eos", "bos", "unk", "sep", "cls", "mask"})

# Token shapes, anchored so the prefix starts a word: `desk-organizer-...` is not `sk-...`.
TOKEN_VALUE = re.compile(
    r"(?<![A-Za-z0-9])("
    r"hf_[A-Za-z0-9]{30,}"  # Hugging Face (hf_ + 34)
    r"|sk-[A-Za-z0-9_-]{32,}"  # OpenAI / Anthropic style (sk-, sk-proj-, sk-ant-)
    r"|gh[pousr]_[A-Za-z0-9]{30,}"  # GitHub classic tokens (ghp_ + 36, gho_, ...)
    r"|github_pat_[A-Za-z0-9_]{30,}"  # GitHub fine-grained tokens
    r")")
# Values that carry no secret even under a secret-looking key; kept so `use_auth_token=true` stays readable.
HARMLESS = frozenset({"", "true", "false", "null", "none"})
# `method=lora`, `+wandb.group=g`: a Hydra override, never the value of a preceding `--token` flag.
_OVERRIDE = re.compile(r"[+~]{0,2}[A-Za-z_][\w.@/-]*=")
# `model.tiny={hf_token: abc}`: Hydra's inline dict syntax nests `key: value` pairs inside an override's value.
_INLINE = re.compile(r"([A-Za-z_][\w-]*)(\s*:\s*)('[^']*'|\"[^\"]*\"|[^,{}\[\]\s]+)")
_WORDS = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")


def key_components(key) -> list[str]:
    """`+wandb.hubToken` -> ['wandb', 'hub', 'token']: split on punctuation and camelCase, lower-cased."""
    return [w.lower() for w in _WORDS.findall(str(key))]


def is_secret_key(key) -> bool:
    """Whether a value under this key (a dict key, a dotted override path, a `--flag`) is a secret."""
    for segment in str(key).split("."):  # `wandb.api_key`: any path segment may name the secret
        parts = key_components(segment)
        if not parts:
            continue
        if ANYWHERE.intersection(parts) or tuple(parts[-2:]) in PAIRS:
            return True
        if parts[-1] in LAST and not (len(parts) > 1 and parts[-2] in SPECIAL_TOKENS):
            return True
    return False


def looks_like_token(value) -> bool:
    """Whether a string contains a well-known token shape (anywhere: a URL or a longer string too)."""
    return isinstance(value, str) and TOKEN_VALUE.search(value) is not None


def _harmless(value) -> bool:
    return value is None or isinstance(value, bool) or (isinstance(value, str) and value.strip().lower() in HARMLESS)


def redact(obj):
    """A copy of `obj` (dicts / lists / scalars, nested) with every secret replaced by "<redacted>".

    Everything under a secret-looking key is replaced whole (a sub-dict too), except values that
    cannot hold a secret (None, booleans, "", "true"); any string shaped like a token is replaced
    wherever it is. Everything else (git shas, hex model revisions, paths, numbers) is kept as is.
    """
    if isinstance(obj, Mapping):
        return {k: (REDACTED if is_secret_key(k) and not _harmless(v) else redact(v)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        out = [redact(v) for v in obj]
        return tuple(out) if isinstance(obj, tuple) else out
    if looks_like_token(obj):
        return REDACTED
    return obj


def _redact_inline(value: str) -> str:
    if not value.lstrip().startswith(("{", "[")):
        return value
    return _INLINE.sub(lambda m: m.group(1) + m.group(2) + REDACTED
                       if is_secret_key(m.group(1)) and not _harmless(m.group(3).strip("'\"")) else m.group(0), value)


def redact_argv(argv) -> list[str]:
    """A copy of a command line with secrets replaced: `+wandb.api_key=abc` -> `+wandb.api_key=<redacted>`.

    Handles Hydra overrides and `--flag=value` (`key=value` with a secret-looking key or a
    token-shaped value), secret keys inside inline dicts (`model.tiny={hf_token: abc}`),
    `--token VALUE` (the item after a secret-looking flag) and bare token-shaped items.
    """
    out: list[str] = []
    secret_next = False
    for item in map(str, argv):
        key, sep, value = item.partition("=")
        if secret_next and not item.startswith("-") and not _OVERRIDE.match(item):
            out.append(REDACTED)
        elif sep and key and ((is_secret_key(key) and not _harmless(value)) or looks_like_token(value)):
            out.append(f"{key}{sep}{REDACTED}")
        elif looks_like_token(item):
            out.append(REDACTED)
        elif sep:
            out.append(f"{key}{sep}{_redact_inline(value)}")
        else:
            out.append(item)
        # `--hf-token hf_...`: a secret-looking flag without `=` takes its value from the next item
        secret_next = item.startswith("-") and not sep and is_secret_key(item.lstrip("-"))
    return out
