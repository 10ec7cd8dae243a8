"""The restricted unpickler loads data pickles and refuses every other global before running anything."""

from __future__ import annotations

import collections
import os
import pickle
import warnings

import numpy as np
import pytest

from stlm.io.safe_pickle import UnsafePickleError, safe_load, safe_loads


class _TouchFile:
    """A malicious payload: unpickling it with pickle.load runs ``touch <marker>``."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "adj_mx.pkl"
    path.write_bytes(pickle.dumps(([np.eye(2)], _TouchFile(str(marker))), protocol=2))

    with pytest.raises(UnsafePickleError) as info:
        safe_load(path)
    message = str(info.value)
    assert str(path) in message
    assert f"'{os.system.__module__}.system'" in message  # 'posix.system' on Linux
    assert "nothing was executed" in message
    assert not marker.exists()

    # Control: the payload is real, plain pickle would have run it.
    pickle.loads(path.read_bytes())
    assert marker.exists()


@pytest.mark.parametrize(
    "module, name",
    [("os", "system"), ("builtins", "eval"), ("builtins", "exec"), ("subprocess", "Popen"),
     ("builtins", "getattr"), ("builtins", "__import__"), ("numpy", "load"), ("__builtin__", "eval")],
)
def test_refuses_dangerous_globals_in_protocol_0(tmp_path, module, name):
    # Hand-written protocol-0 pickle: GLOBAL module.name, then call it with one string argument (REDUCE).
    marker = tmp_path / "pwned"
    payload = f"c{module}\n{name}\n(S'touch {marker}'\ntR.".encode()
    path = tmp_path / "evil.pkl"
    path.write_bytes(payload)
    with pytest.raises(UnsafePickleError, match=rf"evil\.pkl: refused to load the global '{module}\.{name}'"):
        safe_load(path)
    assert not marker.exists()


def test_loads_real_dcrnn_pickle_silently(shared_data):
    path = shared_data / "traffic" / "metr_la_graph" / "adj_mx.pkl"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy.core.* (numpy 1.x path) resolves to numpy._core, without warnings
        sensor_ids, sensor_id_to_ind, adj_mx = safe_load(path)
    assert len(sensor_ids) == 207 and sensor_ids[0] == "773869"
    assert sensor_id_to_ind["773869"] == 0
    assert adj_mx.shape == (207, 207) and adj_mx.dtype == np.float32
    np.testing.assert_array_equal(adj_mx, pickle.loads(path.read_bytes(), encoding="latin1")[2])


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_round_trips_numpy_and_containers_at_every_protocol(protocol):
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    obj = {
        "array": a,
        "transposed": a.T,  # non-contiguous: the _reconstruct path even at protocol 5
        "ints": np.arange(5, dtype=np.int64),
        "scalar": np.float32(1.5),
        "dtype": np.dtype("f8"),
        "set": {1, 2},
        "frozen": frozenset({"a"}),
        "complex": 1 + 2j,
        "bytes": b"\x00\xff",
        "bytearray": bytearray(b"ab"),
        "ordered": collections.OrderedDict(a=1),
        "tuple": ("773869", 3.5, None, True),
    }
    out = safe_loads(pickle.dumps(obj, protocol=protocol))
    for key in ("array", "transposed", "ints"):
        np.testing.assert_array_equal(out[key], obj[key])
        assert out[key].dtype == obj[key].dtype
    assert out["scalar"] == obj["scalar"] and out["scalar"].dtype == np.float32
    assert {k: v for k, v in out.items() if k not in ("array", "transposed", "ints", "scalar")} == {
        k: v for k, v in obj.items() if k not in ("array", "transposed", "ints", "scalar")
    }


def test_accepts_numpy_1x_module_path_at_protocol_2():
    data = pickle.dumps(np.arange(4.0), protocol=2)
    assert b"numpy._core.multiarray" in data
    old = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")  # as numpy 1.x writes it
    np.testing.assert_array_equal(safe_loads(old), np.arange(4.0))


def test_truncated_pickle_names_the_file(tmp_path):
    path = tmp_path / "adj_mx.pkl"
    path.write_bytes(pickle.dumps([np.eye(3)] * 3, protocol=2)[:-40])
    with pytest.raises(pickle.UnpicklingError, match=r"adj_mx\.pkl: not a readable pickle \(truncated or corrupt\?\)"):
        safe_load(path)
