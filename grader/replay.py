"""Record/replay stand-in for the ``reference`` package (the learner bundle ships no reference source).

Recording (instructor side, ``grader.release``): every name a suite takes from
``reference`` is wrapped in a :class:`Recorder`. Each operation on it (a call,
an attribute read, an item, iteration, ``len``) runs the real reference and is
stored under a key: the current test, the operation's path (how the object was
reached: ``reference.encoder.MultiHeadAttention`` → call(32, 4) → ``.state_dict``
→ call()), and a hash of the inputs (tensor bytes, numbers, strings). Tensors go
to safetensors, the rest to JSON; objects that are not plain data (modules,
classes, dataclasses) get a path of their own and are recorded further.

Replay (in the bundle): ``reference/<module>.py`` are stand-ins whose names are
:class:`Replayer` objects; the same operations on the same inputs return the
recorded outputs, so the public tests, their messages and their misconception
hints work as with the real reference. An input that was never recorded (it
depends on the learner's output) raises :class:`ReplayMiss`, a failed check
that says the instructor's grader checks it.

Snapshots: a suite function decorated with :func:`snapshot` computes expected
values from the reference on fixed inputs and returns plain data (tensors,
numbers, strings, lists, tuples, dicts with string keys): e.g. a module's
outputs, its input and parameter gradients, and each misconception variant's
outputs for the hints. In the kit it simply runs; while recording it runs with
the real reference (no call inside it is recorded) and its result is stored as
one entry; in the bundle that entry is returned. Use it where a test needs more
of the reference than a plain call (its type, ``isinstance``, gradients through
it, modules built from variants).
"""

from __future__ import annotations

import builtins
import functools
import hashlib
import json
import os
import random
from pathlib import Path
from typing import Any

import torch

TAPE = "_recorded"  # reference/_recorded.json + reference/_recorded.safetensors in the bundle
MODE = "live"  # "record" while grader.release records, "replay" in the learner bundle (set by stand_in)


class ReplayMiss(AssertionError):
    """The reference's answer for this input was not recorded."""


def _test_id() -> str:
    """The running test as ``name[params]`` (pytest leaves the file out for suites outside its rootdir)."""
    current = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0]
    return current.rpartition("::")[2]


def fingerprint(value: Any) -> Any:
    """A JSON-able, deterministic description of an input (tensors by dtype, shape and a hash of their bytes)."""
    if isinstance(value, (Recorder, Replayer)):
        return ["P", object.__getattribute__(value, "_path")]
    if isinstance(value, torch.Tensor):
        data = value.detach().cpu().contiguous()
        raw = data.view(torch.uint8) if data.dtype != torch.bool and data.numel() else data.to(torch.uint8)
        return ["T", str(data.dtype), list(data.shape), hashlib.sha1(raw.numpy().tobytes()).hexdigest()]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return ["f", repr(value)]
    if isinstance(value, (torch.dtype, torch.device)):
        return ["t", str(value)]
    if isinstance(value, (list, tuple)):
        return [type(value).__name__[0]] + [fingerprint(v) for v in value]
    if isinstance(value, dict):
        return ["d"] + [[str(k), fingerprint(v)] for k, v in value.items()]
    if callable(value):
        return ["F", getattr(value, "__qualname__", type(value).__name__)]
    return ["O", type(value).__name__]


def _key(path: str, op: str, args: Any) -> str:
    text = json.dumps([_test_id(), path, op, fingerprint(args)], sort_keys=False)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _is_plain(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str, bytes, torch.Tensor, torch.dtype,
                                               torch.device, torch.Size))


# ----------------------------------------------------------------------------- recording
class Tape:
    """The recorded outputs: ``entries[key]`` is a list (one per occurrence) of encoded outputs."""

    def __init__(self) -> None:
        self.entries: dict[str, list] = {}
        self.tensors: dict[str, torch.Tensor] = {}
        self.seen: dict[str, int] = {}

    def encode(self, value: Any, path: str) -> Any:
        if isinstance(value, torch.Tensor):
            name = f"t{len(self.tensors)}"
            self.tensors[name] = value.detach().cpu().contiguous().clone()
            return {"__t": name}
        if isinstance(value, torch.Size):
            return {"__size": list(value)}
        if isinstance(value, torch.dtype):
            return {"__dtype": str(value).removeprefix("torch.")}
        if isinstance(value, torch.device):
            return {"__device": str(value)}
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if type(value) in (list, tuple):
            items = [self.encode(v, f"{path}[{i}]") for i, v in enumerate(value)]
            return items if isinstance(value, list) else {"__tuple": items}
        if isinstance(value, dict) and all(isinstance(k, str) for k in value):
            return {"__dict": {k: self.encode(v, f"{path}.{k}") for k, v in value.items()}}
        return {"__p": path}

    def save(self, folder: Path) -> None:
        from safetensors.torch import save_file

        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{TAPE}.json").write_text(json.dumps(self.entries))
        save_file(self.tensors, str(folder / f"{TAPE}.safetensors"))


def _wrap_recorded(value: Any, path: str) -> Any:
    """The real value for the suite: plain data as is, other objects wrapped to be recorded further."""
    if _is_plain(value):
        return value
    if type(value) in (list, tuple):
        items = [_wrap_recorded(v, f"{path}[{i}]") for i, v in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return type(value)((k, _wrap_recorded(v, f"{path}.{k}")) for k, v in value.items())
    return Recorder(value, path)


def _unwrap(value: Any) -> Any:
    if isinstance(value, Recorder):
        return object.__getattribute__(value, "_target")
    if type(value) in (list, tuple):
        return type(value)(_unwrap(v) for v in value)
    if isinstance(value, dict):
        return type(value)((k, _unwrap(v)) for k, v in value.items())
    return value


class Recorder:
    """A reference object whose every operation is recorded on the tape."""

    __slots__ = ("_target", "_path")
    tape: Tape = Tape()
    passthrough = False  # True inside a snapshot function: the real reference, nothing recorded

    def __init__(self, target: Any, path: str):
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_path", path)

    def _do(self, op: str, args: Any, run) -> Any:
        if Recorder.passthrough:
            return run()
        key = _key(object.__getattribute__(self, "_path"), op, args)
        tape = Recorder.tape
        occurrence = tape.seen.get(key, 0)
        tape.seen[key] = occurrence + 1
        path = f"{key}#{occurrence}"
        before = torch.get_rng_state()
        try:
            value = run()
        except Exception as error:
            tape.entries.setdefault(key, []).append({"__raise": type(error).__name__, "message": str(error)})
            raise
        entry = tape.encode(value, path)
        after = torch.get_rng_state()
        if not torch.equal(before, after):  # the reference drew random numbers (weight init, dropout):
            entry = {"__v": entry, "__rng": tape.encode(after, path)}  # replay leaves the generator where it did
        tape.entries.setdefault(key, []).append(entry)
        return _wrap_recorded(value, path)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        target = object.__getattribute__(self, "_target")
        return self._do("call", [list(args), kwargs], lambda: target(*_unwrap(args), **_unwrap(kwargs)))

    def __getattr__(self, name: str) -> Any:
        target = object.__getattribute__(self, "_target")
        return self._do("getattr", name, lambda: getattr(target, name))

    def __setattr__(self, name: str, value: Any) -> None:
        target = object.__getattribute__(self, "_target")
        self._do("setattr", [name, value], lambda: setattr(target, name, _unwrap(value)))

    def __getitem__(self, key: Any) -> Any:
        target = object.__getattribute__(self, "_target")
        return self._do("getitem", key, lambda: target[_unwrap(key)])

    def __iter__(self):
        target = object.__getattribute__(self, "_target")
        return iter(self._do("iter", None, lambda: list(target)))

    def __len__(self) -> int:
        target = object.__getattribute__(self, "_target")
        return self._do("len", None, lambda: len(target))

    def __repr__(self) -> str:
        return f"<reference {object.__getattribute__(self, '_path')}>"


# ----------------------------------------------------------------------------- replay
class _Player:
    def __init__(self, folder: Path):
        self.folder = folder
        self.entries: dict[str, list] | None = None
        self.tensors: dict[str, torch.Tensor] = {}
        self.seen: dict[str, int] = {}

    def load(self) -> None:
        if self.entries is None:
            from safetensors.torch import load_file

            self.entries = json.loads((self.folder / f"{TAPE}.json").read_text())
            self.tensors = load_file(str(self.folder / f"{TAPE}.safetensors"))

    def decode(self, value: Any, device: torch.device | None) -> Any:
        if isinstance(value, list):
            return [self.decode(v, device) for v in value]
        if not isinstance(value, dict):
            return value
        if "__t" in value:
            tensor = self.tensors[value["__t"]].clone()
            return tensor.to(device) if device is not None else tensor
        if "__tuple" in value:
            return tuple(self.decode(v, device) for v in value["__tuple"])
        if "__dict" in value:
            return {k: self.decode(v, device) for k, v in value["__dict"].items()}
        if "__size" in value:
            return torch.Size(value["__size"])
        if "__dtype" in value:
            return getattr(torch, value["__dtype"])
        if "__device" in value:
            return torch.device(value["__device"])
        if "__p" in value:
            return Replayer(value["__p"])
        return value


_players: dict[str, _Player] = {}


def _device_of(args: Any) -> torch.device | None:
    if isinstance(args, torch.Tensor):
        return args.device if args.device.type != "cpu" else None
    if isinstance(args, (list, tuple)):
        return next((d for d in map(_device_of, args) if d is not None), None)
    if isinstance(args, dict):
        return _device_of(list(args.values()))
    return None


class Replayer:
    """A recorded reference object: operations return what the real one returned on the same inputs."""

    __slots__ = ("_path",)
    folder: Path | None = None

    def __init__(self, path: str):
        object.__setattr__(self, "_path", path)

    def _do(self, op: str, args: Any, what: str) -> Any:
        player = _players.setdefault(str(Replayer.folder), _Player(Replayer.folder))
        player.load()
        key = _key(object.__getattribute__(self, "_path"), op, args)
        recorded = player.entries.get(key)
        if not recorded:
            raise ReplayMiss(
                f"this public test needs the reference's answer for {what} on an input that was not recorded "
                "(it depends on your code's output); the instructor's grader checks this case"
            )
        occurrence = player.seen.get(key, 0)
        player.seen[key] = occurrence + 1
        value = recorded[min(occurrence, len(recorded) - 1)]
        if isinstance(value, dict) and "__raise" in value:
            kind = getattr(builtins, value["__raise"], None)
            kind = kind if isinstance(kind, type) and issubclass(kind, Exception) else RuntimeError
            raise kind(value["message"])
        if isinstance(value, dict) and "__rng" in value:
            torch.set_rng_state(player.decode(value["__rng"], None))
            value = value["__v"]
        return player.decode(value, _device_of(args))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._do("call", [list(args), kwargs], "a call")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return self._do("getattr", name, f"attribute {name}")

    def __setattr__(self, name: str, value: Any) -> None:
        self._do("setattr", [name, value], f"setting {name}")

    def __getitem__(self, key: Any) -> Any:
        return self._do("getitem", key, "an item")

    def __iter__(self):
        return iter(self._do("iter", None, "iteration"))

    def __len__(self) -> int:
        return self._do("len", None, "len()")

    def __repr__(self) -> str:
        return "<recorded reference>"


def new_test() -> None:
    """Start counting repeated operations afresh (called before each test: a process may grade many times)."""
    Recorder.tape.seen.clear()
    for player in _players.values():
        player.seen.clear()


def snapshot(function):
    """Decorator: ``function``'s result (plain data, from the reference on fixed inputs) is stored in the bundle.

    See the module docstring. Raises :class:`ReplayMiss` in the bundle for arguments
    that were not recorded (they depend on the learner's output: compute them from
    fixed inputs instead).
    """
    path = f"snapshot.{function.__qualname__}"
    # live mode: results by (inputs, RNG states, grad mode), each with the RNG states it left, so that a judge
    # grading many submissions computes each snapshot once; a hit returns a copy and leaves the generators
    # exactly as a fresh run would. Not kept: CUDA runs, opaque inputs (callables, objects), non-plain results.
    memo: dict[str, tuple[Any, torch.Tensor, Any]] = {}

    def plain_copy(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            if value.requires_grad:
                raise TypeError("a tensor that requires grad")
            return value.clone()
        if isinstance(value, (list, tuple)):
            return type(value)(plain_copy(v) for v in value)
        if isinstance(value, dict):
            return {k: plain_copy(v) for k, v in value.items()}
        if value is None or isinstance(value, (bool, int, float, str, torch.dtype, torch.device, torch.Size)):
            return value
        raise TypeError(type(value).__name__)

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if MODE == "replay":
            return Replayer(path)._do("call", [list(args), kwargs], f"{function.__name__}()")
        if MODE != "record":
            inputs = json.dumps([fingerprint([list(args), kwargs]), fingerprint(torch.get_rng_state()),
                                 repr(random.getstate()), torch.is_grad_enabled()])
            if torch.cuda.is_initialized() or '["F",' in inputs or '["O",' in inputs:
                return function(*args, **kwargs)
            key = hashlib.sha256(inputs.encode()).hexdigest()
            if key not in memo:
                result = function(*args, **kwargs)
                try:
                    kept = plain_copy(result)
                except TypeError:
                    return result
                if len(memo) >= 256:
                    memo.pop(next(iter(memo)))
                memo[key] = (kept, torch.get_rng_state(), random.getstate())
                return result
            kept, torch_state, random_state = memo[key]
            torch.set_rng_state(torch_state)
            random.setstate(random_state)
            return plain_copy(kept)

        def run() -> Any:
            Recorder.passthrough = True
            try:
                return function(*args, **kwargs)
            finally:
                Recorder.passthrough = False

        return Recorder(function, path)._do("call", [list(args), kwargs], run)

    return wrapper


def stand_in(module_name: str):
    """``__getattr__`` for a stand-in ``reference`` module of the bundle (switches this module to replay)."""
    import sys

    global MODE
    MODE = "replay"
    package = sys.modules[module_name.split(".")[0]]
    Replayer.folder = Path(package.__file__).parent

    def __getattr__(name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return Replayer(f"{module_name}").__getattr__(name)

    return __getattr__


def install_recorders(module_names: list[str]) -> None:
    """Replace the real ``reference`` modules in ``sys.modules`` by recording stand-ins (instructor side)."""
    import importlib
    import sys
    import types

    global MODE
    MODE = "record"
    reals = {name: importlib.import_module(name) for name in module_names}  # all real ones first
    for name, real in reals.items():
        recorder = Recorder(real, name)

        class Module(types.ModuleType):
            def __getattr__(self, attribute: str, _recorder=recorder) -> Any:
                if attribute.startswith("__"):
                    raise AttributeError(attribute)
                return _recorder.__getattr__(attribute)

        stand = Module(name)
        stand.__file__ = real.__file__
        sys.modules[name] = stand
        parent, _, child = name.rpartition(".")
        if parent:
            object.__setattr__(sys.modules[parent], child, stand) if parent in sys.modules else None
