"""Traffic readers (.h5, .npz, wide CSV) on real graphs from ../shared/data, and every refusal they make."""

from __future__ import annotations

import logging
from contextlib import contextmanager

import numpy as np
import pandas as pd
import pytest

from stlm.data.sources import (
    CsvTrafficSource,
    DataFileNotFoundError,
    DataValidationError,
    H5TrafficSource,
    NpzTrafficSource,
    load_adjacency,
)


@contextmanager
def raises_mentioning(*fragments: str, exc: type[Exception] = DataValidationError):
    """Expect ``exc`` whose message contains every fragment (file name, key words of the fix)."""
    with pytest.raises(exc) as info:
        yield info
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in the message:\n{message}"


@pytest.fixture(scope="module")
def traffic(shared_data):
    return shared_data / "traffic"


# --- METR-LA layout .h5 ---------------------------------------------------------------------------------------

STEPS = 2 * 288  # two days of 5-minute steps


@pytest.fixture
def metr_la(tmp_path, traffic):
    """A METR-LA-layout .h5: columns = the 207 graph sensor ids shuffled; value = graph row + 1 + t/1000, some zeros."""
    graph = load_adjacency(traffic / "metr_la_graph" / "adj_mx.pkl")
    rng = np.random.default_rng(0)
    order = rng.permutation(graph.n_nodes)
    columns = [graph.node_ids[i] for i in order]
    t = np.arange(STEPS)[:, None]
    values = (order[None, :] + 1 + t / 1000).astype(np.float64)
    zeros = rng.random(values.shape) < 0.05
    values[zeros] = 0.0
    index = pd.date_range("2012-03-01", periods=STEPS, freq="5min")
    path = tmp_path / "metr-la.h5"
    pd.DataFrame(values, index=index, columns=columns).to_hdf(path, key="df")
    return {"path": path, "graph": graph, "columns": columns, "zeros": zeros, "index": index}


def _write_h5(path, frame, key="df"):
    frame.to_hdf(path, key=key)
    return path


def test_h5_aligns_with_metr_la_graph_by_id(metr_la, traffic):
    series = H5TrafficSource(
        metr_la["path"], adjacency=traffic / "metr_la_graph" / "adj_mx.pkl",
        locations=traffic / "metr_la_graph" / "graph_sensor_locations.csv",
    ).load()
    graph = metr_la["graph"]
    row = {n: i for i, n in enumerate(graph.node_ids)}
    assert series.node_ids == metr_la["columns"]  # file order kept
    assert series.values.shape == (STEPS, 207, 1) and series.channels == ["speed"] and series.units == ["mph"]
    assert series.freq == pd.Timedelta("5min") and series.timestamps[0] == pd.Timestamp("2012-03-01")
    # values of a sensor land on its graph row: the fixture wrote (graph row + 1) + t/1000
    t = np.arange(STEPS)[:, None]
    decoded = np.round(series.values[:, :, 0] - t / 1000 - 1).astype(int)
    rows = np.array([row[n] for n in series.node_ids])
    observed = series.mask[:, :, 0]
    assert (decoded[observed] == np.broadcast_to(rows, decoded.shape)[observed]).all()
    np.testing.assert_array_equal(series.adjacency, graph.weights[np.ix_(rows, rows)])
    # 0 = missing: masked exactly where the fixture wrote zeros, and stored as 0
    np.testing.assert_array_equal(~observed, metr_la["zeros"])
    assert (series.values[~series.mask] == 0).all()
    locations = pd.read_csv(traffic / "metr_la_graph" / "graph_sensor_locations.csv", dtype={"sensor_id": str})
    latlon = locations.set_index("sensor_id").loc[series.node_ids, ["latitude", "longitude"]].to_numpy()
    np.testing.assert_allclose(series.node_coords, latlon)
    assert series.name == "metr-la" and series.origin == str(metr_la["path"])


def test_h5_with_distance_csv_matches_published_pems_bay_graph(tmp_path, traffic):
    published = load_adjacency(traffic / "pems_bay_graph" / "adj_mx_bay.pkl")
    order = np.random.default_rng(2).permutation(published.n_nodes)
    columns = [published.node_ids[i] for i in order]
    index = pd.date_range("2017-01-01", periods=12, freq="5min")
    path = _write_h5(tmp_path / "pems-bay.h5", pd.DataFrame(60.0, index=index, columns=columns))
    series = H5TrafficSource(path, adjacency=traffic / "pems_bay_graph" / "distances_bay_2017.csv").load()
    assert series.node_ids == columns
    np.testing.assert_allclose(series.adjacency, published.weights[np.ix_(order, order)], atol=1e-6)


def test_h5_sensor_missing_from_graph(metr_la, traffic, tmp_path, caplog):
    frame = pd.read_hdf(metr_la["path"], "df")
    frame["999999"] = 50.0
    path = _write_h5(tmp_path / "extra.h5", frame.drop(columns=metr_la["columns"][:3]))
    adj = traffic / "metr_la_graph" / "adj_mx.pkl"
    with raises_mentioning("extra.h5", "only in the series (1): '999999'", "only in the graph (3)",
                           repr(metr_la["columns"][0]), "dataset.drop_unmatched=true"):
        H5TrafficSource(path, adjacency=adj).load()
    with caplog.at_level(logging.WARNING):
        series = H5TrafficSource(path, adjacency=adj, drop_unmatched=True).load()
    assert series.n_nodes == 204 and "999999" not in series.node_ids and "'999999'" in caplog.text


def test_h5_nan_policy(tmp_path):
    index = pd.date_range("2012-03-01", periods=4, freq="5min")
    frame = pd.DataFrame({"a": [1.0, 2.0, 0.0, 4.0], "b": [1.0, 1.0, np.nan, 1.0]}, index=index)
    path = _write_h5(tmp_path / "speed.h5", frame)
    series = H5TrafficSource(path).load()  # missing_value=0.0 declared: zeros and NaN masked
    np.testing.assert_array_equal(series.mask[:, :, 0], [[1, 1], [1, 1], [0, 0], [1, 1]])
    with raises_mentioning("speed.h5", "NaN at key 'df', sensor column 'b', row 2 (timestamp 2012-03-01 00:10:00)",
                           "declares no missing values", "dataset.missing_value"):
        H5TrafficSource(path, missing_value=None).load()
    frame.loc[index[1], "a"] = -np.inf
    path = _write_h5(tmp_path / "inf.h5", frame.fillna(1.0))
    with raises_mentioning("inf.h5", "infinite value at key 'df', sensor column 'a', row 1"):
        H5TrafficSource(path, missing_value=None).load()
    assert not H5TrafficSource(path).load().mask[1, 0, 0]


def test_h5_wrong_format_and_bad_contents(tmp_path):
    csv = tmp_path / "speed.csv"
    csv.write_text("time,a\n2012-03-01 00:00,1\n")
    with raises_mentioning("speed.csv", "not an HDF5 file", "text file", "dataset=csv"):
        H5TrafficSource(csv).load()

    index = pd.date_range("2012-03-01", periods=3, freq="5min")
    good = pd.DataFrame({"a": [1.0, 2.0, 3.0]}, index=index)
    path = _write_h5(tmp_path / "other.h5", good, key="speed")
    with raises_mentioning("other.h5", "no key 'df'", "keys present: 'speed'", "dataset.key"):
        H5TrafficSource(path).load()

    path = _write_h5(tmp_path / "noindex.h5", good.reset_index(drop=True))
    with raises_mentioning("noindex.h5", "holds int64 values", "not a DatetimeIndex", "df.index = pd.to_datetime"):
        H5TrafficSource(path).load()

    path = _write_h5(tmp_path / "nosensors.h5", good.drop(columns="a"))
    with raises_mentioning("nosensors.h5", "zero sensors"):
        H5TrafficSource(path).load()

    path = _write_h5(tmp_path / "text.h5", good.assign(b=["x", "y", "z"]))
    with raises_mentioning("text.h5", "'b'", "not numeric"):
        H5TrafficSource(path).load()

    data = _write_h5(tmp_path / "full.h5", good).read_bytes()
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(data[: len(data) // 2])
    with raises_mentioning("truncated.h5", "truncated or corrupt", "truncated file"):
        H5TrafficSource(truncated).load()


@pytest.mark.parametrize(
    "stamps, kind",
    [(["00:00", "00:05", "00:05", "00:10"], "duplicate timestamps at row 2"),
     (["00:00", "00:10", "00:05", "00:15"], "unsorted timestamps at row 2"),
     (["00:00", "00:05", "00:10", "00:20"], "irregular time step at row 3")],
)
def test_h5_timestamp_errors_name_the_file(tmp_path, stamps, kind):
    index = pd.to_datetime([f"2012-03-01 {s}" for s in stamps])
    path = _write_h5(tmp_path / "times.h5", pd.DataFrame({"a": [1.0] * 4}, index=index))
    with raises_mentioning(str(path), kind):
        H5TrafficSource(path).load()


# --- PEMS-layout .npz (Hangzhou metro) ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hangzhou(traffic):
    folder = traffic / "hangzhou_metro"
    return {"npz": folder / "hangzhou_metro.npz", "graph": folder / "graph.csv",
            "data": np.load(folder / "hangzhou_metro.npz")["data"]}


def _hangzhou_source(hz, **kwargs):
    return NpzTrafficSource(hz["npz"], adjacency=hz["graph"], start="2019-01-01", interval="10min",
                            channels=["inflow", "outflow"], **kwargs)


def test_hangzhou_without_node_ids_refuses_to_guess(hangzhou):
    with raises_mentioning("hangzhou_metro.npz", "no node ids", "80 nodes", "graph has 81 nodes", "dataset.node_ids",
                           "dataset.drop_unmatched=true", "0..80 without 54"):
        _hangzhou_source(hangzhou).load()


def test_hangzhou_graph_node_without_data_needs_a_decision(hangzhou):
    ids = [str(i) for i in range(81) if i != 54]
    with raises_mentioning("hangzhou_metro.npz", "only in the graph (1): '54'", "dataset.drop_unmatched=true"):
        _hangzhou_source(hangzhou, node_ids=ids).load()


def test_hangzhou_aligns_with_node_ids_excluding_54(hangzhou, caplog):
    ids = [i for i in range(81) if i != 54]  # ints, as a YAML list gives them
    with caplog.at_level(logging.WARNING):
        series = _hangzhou_source(hangzhou, node_ids=ids, drop_unmatched=True).load()
    assert "'54'" in caplog.text
    graph = load_adjacency(hangzhou["graph"])
    assert series.node_ids == [str(i) for i in ids]
    assert series.values.shape == (3600, 80, 2) and series.mask.all()  # zeros are real counts, not missing
    np.testing.assert_array_equal(series.values, hangzhou["data"])
    np.testing.assert_array_equal(series.adjacency, graph.weights[np.ix_(ids, ids)])
    assert series.adjacency[53, 54] == 0 and graph.weights[53, 55] == 0  # 53-54-55 path lost with node 54
    assert series.timestamps[1] - series.timestamps[0] == pd.Timedelta("10min")
    assert series.timestamps[-1] == pd.Timestamp("2019-01-25 23:50")  # 25 days


def test_npz_node_ids_from_a_file_in_any_order(hangzhou, tmp_path):
    rng = np.random.default_rng(1)
    ids = [i for i in range(81) if i != 54]
    ids = [ids[k] for k in rng.permutation(80)]  # column k of the npz is station ids[k]
    ids_file = tmp_path / "stations.txt"
    ids_file.write_text("# station of each npz column\n" + "\n".join(map(str, ids)) + "\n")
    series = _hangzhou_source(hangzhou, node_ids=str(ids_file), drop_unmatched=True).load()
    graph = load_adjacency(hangzhou["graph"])
    assert series.node_ids == [str(i) for i in ids]
    np.testing.assert_array_equal(series.values, hangzhou["data"])  # columns are not moved, only named
    np.testing.assert_array_equal(series.adjacency, graph.weights[np.ix_(ids, ids)])


def test_npz_node_id_count_mismatch(hangzhou):
    with raises_mentioning("hangzhou_metro.npz", "dataset.node_ids lists 81 ids", "80 nodes"):
        _hangzhou_source(hangzhou, node_ids=list(range(81))).load()


def test_npz_positional_alignment_when_counts_agree(tmp_path):
    path = tmp_path / "pems.npz"
    np.savez(path, data=np.arange(12, dtype=np.float32).reshape(4, 3))  # (T, N): one channel
    graph = tmp_path / "adj.csv"
    graph.write_text(",0,1,2\n0,1,1,0\n1,1,1,1\n2,0,1,1\n")
    series = NpzTrafficSource(path, adjacency=graph).load()
    assert series.node_ids == ["0", "1", "2"] and series.channels == ["value"] and series.values.shape == (4, 3, 1)
    np.testing.assert_array_equal(series.adjacency, [[1, 1, 0], [1, 1, 1], [0, 1, 1]])
    distances = tmp_path / "distance.csv"
    distances.write_text("from,to,cost\n0,1,1.0\n1,2,3.0\n")
    series = NpzTrafficSource(path, adjacency=distances).load()  # PEMS04/08: distance ids are 0..N-1
    assert series.adjacency[0, 1] > 0 and series.adjacency[1, 0] == 0


def test_distance_csv_that_misses_series_sensors_is_a_mismatch(tmp_path):
    path = tmp_path / "flow.npz"
    np.savez(path, data=np.ones((4, 3, 1), dtype=np.float32))
    distances = tmp_path / "distance.csv"
    distances.write_text("from,to,cost\n0,1,1.0\n1,0,2.0\n1,7,3.0\n")  # sensor 2 has no distance; 7 is extra
    with raises_mentioning("flow.npz", "have no distance in", "only in the series (1): '2'", "dataset.drop_unmatched=true"):
        NpzTrafficSource(path, adjacency=distances).load()
    series = NpzTrafficSource(path, adjacency=distances, drop_unmatched=True).load()
    assert series.node_ids == ["0", "1"] and series.adjacency.shape == (2, 2) and series.values.shape == (4, 2, 1)


def test_npz_missing_value_policy(tmp_path):
    data = np.ones((5, 2, 1), dtype=np.float32)
    data[1, 0, 0] = 0.0
    data[3, 1, 0] = np.nan
    path = tmp_path / "flow.npz"
    np.savez(path, data=data)
    with raises_mentioning("flow.npz", "NaN at 'data'[3, 1, 0] (time 2018-01-01 00:15:00, node 1, channel 'value')",
                           "declares no missing values", "dataset.missing_value=.nan"):
        NpzTrafficSource(path).load()
    series = NpzTrafficSource(path, missing_value=float("nan")).load()  # NaN only: the zero stays observed
    assert not series.mask[3, 1, 0] and series.mask[1, 0, 0] and series.values[3, 1, 0] == 0
    series = NpzTrafficSource(path, missing_value=0.0).load()
    assert not series.mask[3, 1, 0] and not series.mask[1, 0, 0] and series.mask.sum() == 8
    data[3, 1, 0] = np.inf
    np.savez(path, data=data)
    with raises_mentioning("flow.npz", "infinite value at 'data'[3, 1, 0]"):
        NpzTrafficSource(path).load()


def test_npz_integer_counts_and_missing_value_from_config_text(tmp_path):
    path = tmp_path / "counts.npz"
    np.savez(path, data=np.array([[[3], [0]], [[-1], [7]]], dtype=np.int64))
    series = NpzTrafficSource(path, missing_value="-1").load()  # YAML may hand over text
    assert series.values.dtype == np.float32
    np.testing.assert_array_equal(series.mask[:, :, 0], [[True, True], [False, True]])
    with raises_mentioning("dataset.missing_value must be a number, .nan or null", "'none?'"):
        NpzTrafficSource(path, missing_value="none?")


def test_npz_bad_files_and_config(tmp_path):
    path = tmp_path / "pems.npz"
    np.savez(path, x=np.ones((4, 2, 1)), y=np.ones(3))
    with raises_mentioning("pems.npz", "no array 'data'", "arrays present: 'x', 'y'", "dataset.key"):
        NpzTrafficSource(path).load()
    np.savez(path, data=np.array([[1, "a"]], dtype=object))
    with raises_mentioning("pems.npz", "holds Python objects", "refused for safety"):
        NpzTrafficSource(path).load()
    np.savez(path, data=np.ones((4, 2, 2, 2)))
    with raises_mentioning("pems.npz", "shape (4, 2, 2, 2)", "(T, N, C)"):
        NpzTrafficSource(path).load()
    np.savez(path, data=np.ones((4, 0, 2)))
    with raises_mentioning("pems.npz", "zero sensors"):
        NpzTrafficSource(path).load()
    np.savez(path, data=np.ones((4, 2, 2)))
    with raises_mentioning("pems.npz", "dataset.channels has 1 entries", "2 channels"):
        NpzTrafficSource(path, channels=["flow"]).load()
    with raises_mentioning("pems.npz", "dataset.interval='5 parsecs'"):
        NpzTrafficSource(path, interval="5 parsecs").load()
    data = path.read_bytes()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(data[: len(data) // 2])
    with raises_mentioning("truncated.npz", "truncated or corrupt"):
        NpzTrafficSource(truncated).load()
    csv = tmp_path / "flow.csv"
    csv.write_text("time,a\n2018-01-01,1\n")
    with raises_mentioning("flow.csv", "not an .npz archive", "text file"):
        NpzTrafficSource(csv).load()
    npy = tmp_path / "flow.npy"
    np.save(npy, np.ones((4, 2, 2), dtype=np.float32))
    assert NpzTrafficSource(npy).load().values.shape == (4, 2, 2)


# --- wide CSV -------------------------------------------------------------------------------------------------

WIDE = """time,s1,s2,s3
2020-01-01 00:00,1.5,,3
2020-01-01 00:05,2.5,2,
2020-01-01 00:10,,NA,3.5
2020-01-01 00:15,4,4,0
"""


def test_wide_csv_empty_cells_are_masked(tmp_path):
    path = tmp_path / "wide.csv"
    path.write_text(WIDE)
    series = CsvTrafficSource(path, unit="veh/h").load()
    assert series.node_ids == ["s1", "s2", "s3"] and series.channels == ["value"] and series.units == ["veh/h"]
    expected_mask = np.array([[1, 0, 1], [1, 1, 0], [0, 0, 1], [1, 1, 1]], dtype=bool)
    np.testing.assert_array_equal(series.mask[:, :, 0], expected_mask)
    np.testing.assert_array_equal(series.values[:, :, 0], [[1.5, 0, 3], [2.5, 2, 0], [0, 0, 3.5], [4, 4, 0]])
    assert series.freq == pd.Timedelta("5min") and series.timestamps.dtype == "datetime64[ns]"
    assert CsvTrafficSource(path, missing_value=0).load().mask[3, 2, 0] == False  # noqa: E712


def test_wide_csv_with_graph_aligned_by_header_ids(tmp_path):
    path = tmp_path / "wide.csv"
    path.write_text("stamp,30,10,20\n2020-01-01 00:00,3,1,2\n2020-01-01 01:00,3,1,2\n")
    graph = tmp_path / "adj.csv"
    graph.write_text(",10,20,30\n10,1,0.5,0\n20,0.5,1,0.2\n30,0,0.2,1\n")
    series = CsvTrafficSource(path, timestamp_column="stamp", adjacency=graph).load()
    assert series.node_ids == ["30", "10", "20"]
    np.testing.assert_allclose(series.adjacency, [[1, 0, 0.2], [0, 1, 0.5], [0.2, 0.5, 1]])


def test_wide_csv_refusals(tmp_path):
    path = tmp_path / "wide.csv"
    path.write_text(WIDE.replace("2020-01-01 00:05,2.5,2,", "2020-01-01 00:05,2.5,inf,"))
    with raises_mentioning("wide.csv", "infinite value at column 's2', row 1 (timestamp 2020-01-01 00:05:00)",
                           "dataset.missing_value"):
        CsvTrafficSource(path).load()
    assert not CsvTrafficSource(path, missing_value=float("nan")).load().mask[1, 1, 0]

    path.write_text(WIDE.replace("2020-01-01 00:05,2.5,2,", "2020-01-01 00:05,2.5,2?,"))
    with raises_mentioning("wide.csv", "column 's2', row 1", "'2?', not a number"):
        CsvTrafficSource(path).load()

    path.write_text(WIDE.replace("2020-01-01 00:10", "next day"))
    with raises_mentioning("wide.csv", "timestamp in row 2 of column 'time'", "'next day'"):
        CsvTrafficSource(path).load()

    path.write_text(WIDE.replace("time,s1,s2,s3", "time,s1,s2,s1"))
    with raises_mentioning("wide.csv", "duplicate column names", "'s1'"):
        CsvTrafficSource(path).load()

    path.write_text("time\n2020-01-01 00:00\n")
    with raises_mentioning("wide.csv", "zero sensors"):
        CsvTrafficSource(path).load()

    path.write_text("time,s1\n")
    with raises_mentioning("wide.csv", "no data rows"):
        CsvTrafficSource(path).load()

    path.write_text(WIDE.replace("00:10", "00:05"))
    with raises_mentioning(str(path), "duplicate timestamps at row 2", "remove duplicate rows"):
        CsvTrafficSource(path).load()

    with raises_mentioning("wide.csv", "no column 'when'", "'time', 's1'"):
        CsvTrafficSource(path, timestamp_column="when").load()

    binary = tmp_path / "wide.npz"
    np.savez(binary, data=np.ones(3))
    with raises_mentioning("wide.npz", "not a CSV text file", "dataset=pems"):
        CsvTrafficSource(binary).load()


# --- every reader: missing and empty files --------------------------------------------------------------------

READERS = [(H5TrafficSource, "metr-la.h5"), (NpzTrafficSource, "pems.npz"), (CsvTrafficSource, "wide.csv")]


@pytest.mark.parametrize("reader, name", READERS)
def test_missing_file(tmp_path, monkeypatch, reader, name):
    monkeypatch.chdir(tmp_path)
    relative = f"data/{name}"
    with raises_mentioning(f"{relative}: file not found", f"looked for {tmp_path / relative}",
                           "relative paths resolve against the directory you ran from", "dataset.path",
                           exc=DataFileNotFoundError) as info:
        reader(relative).load()
    assert isinstance(info.value, FileNotFoundError)


@pytest.mark.parametrize("reader, name", READERS)
def test_empty_file(tmp_path, reader, name):
    path = tmp_path / name
    path.touch()
    with raises_mentioning(name, "the file is empty (0 bytes", "fetch it again"):
        reader(path).load()


def test_missing_adjacency_file_is_named(tmp_path):
    path = tmp_path / "wide.csv"
    path.write_text(WIDE)
    with raises_mentioning("nowhere/adj.pkl: file not found", "dataset.adjacency", exc=DataFileNotFoundError):
        CsvTrafficSource(path, adjacency="nowhere/adj.pkl").load()
