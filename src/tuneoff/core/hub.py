"""Reaching the Hugging Face hub, or knowing at once that it cannot be reached.

Offline, transformers and datasets retry each download for tens of seconds before failing, and a study of 10 hub
runs spent minutes on it to end with "nothing to analyse". tuneoff asks once per process: if the hub does not
answer within a few seconds (or ``HF_HUB_OFFLINE`` is set), the libraries are switched to their offline mode (the
local cache only), so a name that is not cached fails at once with one message, and a cached one still loads.
"""

from __future__ import annotations

import os
import socket

from tuneoff.core.errors import TuneoffError

HUB_HOST = ("huggingface.co", 443)
_reachable: bool | None = None


def offline_by_choice() -> bool:
    return any(
        os.environ.get(k, "").lower() in ("1", "true", "yes", "on") for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def reachable(timeout: float = 3.0) -> bool:
    """Whether the hub answers (asked once per process); if not, the libraries go offline for this process."""
    global _reachable
    if _reachable is None:
        if offline_by_choice():
            _reachable = False
        else:
            try:
                socket.create_connection(HUB_HOST, timeout=timeout).close()
                _reachable = True
            except OSError:
                _reachable = False
        if not _reachable:
            go_offline()
    return _reachable


def go_offline() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    try:  # already imported: the constant was read at import time
        import huggingface_hub.constants as constants

        constants.HF_HUB_OFFLINE = True
    except ImportError:  # pragma: no cover - a dependency of transformers
        pass


def cached(repo_id: str, repo_type: str = "model") -> bool:
    """Whether the local Hugging Face cache holds this repository (its config / card)."""
    from huggingface_hub import try_to_load_from_cache

    probe = "config.json" if repo_type == "model" else "README.md"
    try:
        return isinstance(try_to_load_from_cache(repo_id, probe, repo_type=repo_type), str)
    except (ValueError, OSError):  # an invalid repo id (HFValidationError is a ValueError) is "not cached"
        return False


def unavailable(names: dict[str, str]) -> list[str]:
    """Which of these hub repositories (name -> "model" | "dataset") can be had neither from the hub nor the cache."""
    missing = [n for n, kind in names.items() if not cached(n, kind)]
    return missing if missing and not reachable() else []


def require(names: dict[str, str], what: str) -> None:
    """Fail now, with one message, when ``what`` needs hub repositories that cannot be reached or found cached."""
    missing = unavailable(names)
    if missing:
        why = "HF_HUB_OFFLINE is set" if offline_by_choice() else f"{HUB_HOST[0]} does not answer"
        raise TuneoffError(
            f"{what} needs {', '.join(repr(m) for m in missing)} from the Hugging Face hub, but {why} and the local "
            "cache does not hold them. Connect (or download them once where you can: they are cached), or use the "
            "offline built-ins (`tuneoff models`, `tuneoff datasets`; studies/offline/ has offline versions of the "
            "hub studies). Nothing was run."
        )
