"""Graph files (DCRNN pickle, distance CSV, square CSV) and alignment of series nodes to graph nodes by id."""

from __future__ import annotations

import logging
import pickle
from contextlib import contextmanager

import numpy as np
import pandas as pd
import pytest

from stlm.data.sources import DataFileNotFoundError, DataValidationError, Graph, align_series_to_graph, load_adjacency


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


# --- DCRNN pickle -------------------------------------------------------------------------------------------


def test_metr_la_pickle(traffic):
    graph = load_adjacency(traffic / "metr_la_graph" / "adj_mx.pkl")
    assert graph.n_nodes == 207 and len(set(graph.node_ids)) == 207
    assert graph.node_ids[:2] == ["773869", "767541"]
    assert graph.weights.shape == (207, 207) and graph.weights.dtype == np.float32
    np.testing.assert_array_equal(np.diag(graph.weights), 1.0)
    locations = pd.read_csv(traffic / "metr_la_graph" / "graph_sensor_locations.csv", dtype={"sensor_id": str})
    assert graph.node_ids == list(locations["sensor_id"])  # the published order


def test_pickle_restricted_to_node_ids_reorders(traffic):
    full = load_adjacency(traffic / "metr_la_graph" / "adj_mx.pkl")
    ids = [full.node_ids[5], full.node_ids[0], full.node_ids[100]]
    sub = load_adjacency(traffic / "metr_la_graph" / "adj_mx.pkl", node_ids=[int(i) for i in ids])  # ints normalise
    assert sub.node_ids == ids
    np.testing.assert_array_equal(sub.weights, full.weights[np.ix_([5, 0, 100], [5, 0, 100])])
    with raises_mentioning("adj_mx.pkl", "not in the graph", "'999'"):
        load_adjacency(traffic / "metr_la_graph" / "adj_mx.pkl", node_ids=["999"])


def test_pickle_that_is_not_a_dcrnn_tuple(tmp_path):
    path = tmp_path / "graph.pkl"
    path.write_bytes(pickle.dumps({"adj": np.eye(3)}))
    with raises_mentioning("graph.pkl", "expected a DCRNN adjacency pickle", "(sensor_ids, sensor_id_to_ind, adj_mx)", "dict"):
        load_adjacency(path)
    path.write_bytes(pickle.dumps((["a", "b"], {"a": 0, "b": 1}, np.eye(3))))
    with raises_mentioning("graph.pkl", "shape (3, 3)", "2 sensor_ids"):
        load_adjacency(path)
    path.write_bytes(pickle.dumps((["a", "b"], {"a": 1, "b": 0}, np.eye(2))))
    with raises_mentioning("graph.pkl", "sensor_id_to_ind disagrees"):
        load_adjacency(path)


def test_truncated_pickle(tmp_path, traffic):
    path = tmp_path / "adj_mx.pkl"
    path.write_bytes((traffic / "metr_la_graph" / "adj_mx.pkl").read_bytes()[:5000])
    with raises_mentioning("adj_mx.pkl", "truncated or corrupt", "Fetch the file again"):
        load_adjacency(path)


def test_malicious_pickle_via_load_adjacency(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "adj_mx.pkl"
    path.write_bytes(f"cos\nsystem\n(S'touch {marker}'\ntR.".encode())
    with raises_mentioning("adj_mx.pkl", "refused to load the global 'os.system'"):
        load_adjacency(path)
    assert not marker.exists()


# --- distance CSV -> Gaussian kernel ------------------------------------------------------------------------


def test_pems_bay_distances_reproduce_dcrnn_adjacency(traffic):
    published = load_adjacency(traffic / "pems_bay_graph" / "adj_mx_bay.pkl")
    graph = load_adjacency(traffic / "pems_bay_graph" / "distances_bay_2017.csv", node_ids=published.node_ids)
    assert graph.node_ids == published.node_ids
    np.testing.assert_allclose(graph.weights, published.weights, atol=1e-6)


def test_pems_bay_gaussian_properties_and_hand_computed_pair(traffic):
    path = traffic / "pems_bay_graph" / "distances_bay_2017.csv"
    graph = load_adjacency(path)  # headerless file; ids = sorted union
    assert graph.n_nodes == 325 and graph.node_ids == sorted(graph.node_ids, key=int)
    w = graph.weights
    np.testing.assert_array_equal(np.diag(w), 1.0)
    assert ((w == 0) | ((w >= 0.1) & (w <= 1))).all()  # threshold zeros, kernel in (0, 1]

    rows = pd.read_csv(path, header=None, names=["from", "to", "cost"], dtype={"from": str, "to": str})
    sigma = rows["cost"].std(ddof=0)  # no duplicate pairs in this file, so rows == finite matrix entries
    pos = {n: i for i, n in enumerate(graph.node_ids)}
    near = rows[(rows["from"] != rows["to"]) & (rows["cost"] < sigma)].iloc[0]
    far = rows[rows["cost"] > 2 * sigma].iloc[0]  # exp(-4) < 0.1
    assert w[pos[near["from"]], pos[near["to"]]] == pytest.approx(np.exp(-((near["cost"] / sigma) ** 2)), rel=1e-6)
    assert w[pos[far["from"]], pos[far["to"]]] == 0
    # Directed, as DCRNN: the file has many one-way entries.
    off = w - np.diag(np.diag(w))
    assert not np.allclose(off, off.T)
    # Pairs with no distance row have no edge.
    listed = np.zeros_like(w, dtype=bool)
    listed[[pos[f] for f in rows["from"]], [pos[t] for t in rows["to"]]] = True
    assert (w[~listed] == 0).all()


def test_distance_csv_with_header_sigma_threshold_and_isolated_nodes(tmp_path, caplog):
    path = tmp_path / "distance.csv"
    path.write_text("from,to,cost\na,b,1.0\nb,a,1.0\nb,c,2.0\n")
    graph = load_adjacency(path, distance_sigma=2.0, distance_threshold=0.5)
    assert graph.node_ids == ["a", "b", "c"]
    expected = np.array([[1, np.exp(-0.25), 0], [np.exp(-0.25), 1, 0], [0, 0, 1]])  # exp(-1) = 0.37 < 0.5 -> 0
    np.testing.assert_allclose(graph.weights, expected, rtol=1e-6)
    with caplog.at_level(logging.WARNING):
        graph = load_adjacency(path, node_ids=["c", "b", "z"], distance_sigma=2.0)
    assert graph.node_ids == ["c", "b", "z"]
    assert "'z'" in caplog.text and "isolated" in caplog.text
    np.testing.assert_array_equal(graph.weights[2], [0, 0, 1])
    assert graph.weights[1, 0] > 0 and graph.weights[0, 1] == 0  # only b -> c is listed
    with raises_mentioning("distance.csv", "no distance row connects", "dataset.node_ids", "'a'"):
        load_adjacency(path, node_ids=["0", "1"])


def test_distance_csv_bad_cost(tmp_path):
    path = tmp_path / "distance.csv"
    path.write_text("from,to,cost\n0,1,1.0\n1,2,far\n")
    with raises_mentioning("distance.csv", "distance row 1 (1 -> 2)", "'far'", "finite numbers >= 0"):
        load_adjacency(path)


# --- square CSV ---------------------------------------------------------------------------------------------


def test_hangzhou_square_csv(traffic):
    graph = load_adjacency(traffic / "hangzhou_metro" / "graph.csv")
    assert graph.node_ids == [str(i) for i in range(81)]
    np.testing.assert_array_equal(graph.weights, graph.weights.T)
    assert set(np.unique(graph.weights)) == {0.0, 1.0}
    assert list(np.nonzero(graph.weights[54])[0]) == [53, 55]  # station 54 sits between 53 and 55


def test_headerless_square_csv(tmp_path):
    path = tmp_path / "adj.csv"
    path.write_text("0,1,0,0\n1,0,0.5,0\n0,0.5,0,1\n0,0,1,0\n")
    graph = load_adjacency(path)
    assert graph.node_ids == ["0", "1", "2", "3"] and graph.weights[1, 2] == 0.5


def test_square_csv_with_mismatched_axes(tmp_path):
    path = tmp_path / "adj.csv"
    path.write_text(",a,b\nb,0,1\na,1,0\n")
    with raises_mentioning("adj.csv", "header ids and the index column differ", "column 'a', row 'b'"):
        load_adjacency(path)


def test_square_csv_with_a_non_number(tmp_path):
    path = tmp_path / "adj.csv"
    path.write_text(",a,b\na,0,1\nb,,0\n")
    with raises_mentioning("adj.csv", "weight from 'b' to 'a' is ''", "write 0 where there is no edge"):
        load_adjacency(path)


def test_unrecognised_adjacency_files(tmp_path):
    path = tmp_path / "adj.csv"
    path.write_text("a,b\n1,2\n3,4\n5,6\n")
    with raises_mentioning("adj.csv", "not a recognised adjacency CSV", "4 rows x 2 columns", "from,to,cost"):
        load_adjacency(path)
    npz = tmp_path / "adj.npz"
    np.savez(npz, adj=np.eye(2))
    with raises_mentioning("adj.npz", "DCRNN pickle or a CSV", "zip archive"):
        load_adjacency(npz)


def test_missing_and_empty_adjacency_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with raises_mentioning("graphs/adj.pkl: file not found", str(tmp_path / "graphs" / "adj.pkl"),
                           "directory you ran from", "dataset.adjacency", exc=DataFileNotFoundError) as info:
        load_adjacency("graphs/adj.pkl")
    assert isinstance(info.value, FileNotFoundError)
    (tmp_path / "adj.csv").write_text("")
    with raises_mentioning("adj.csv", "empty (0 bytes"):
        load_adjacency("adj.csv")


# --- alignment by id ----------------------------------------------------------------------------------------


def _graph(ids):
    n = len(ids)
    return Graph(ids, np.arange(n * n, dtype=np.float32).reshape(n, n), origin="g.csv")


def test_align_reorders_graph_to_series_order():
    graph = _graph(["10", "20", "30"])
    keep, weights = align_series_to_graph([30, "10", 20.0], graph)  # ints/floats compare as their strings
    np.testing.assert_array_equal(keep, [0, 1, 2])
    np.testing.assert_array_equal(weights, graph.weights[np.ix_([2, 0, 1], [2, 0, 1])])


def test_align_mismatch_lists_ids_on_each_side():
    graph = _graph([str(i) for i in range(30)])
    series = [str(i) for i in range(5, 50)]
    with raises_mentioning(
        "data.h5:", "(45 nodes)", "g.csv (30 nodes)", "25 in common",
        "only in the series (20): '30', '31',", "(and 10 more)",
        "only in the graph (5): '0', '1', '2', '3', '4'\n",
        "dataset.node_ids", "dataset.drop_unmatched=true",
    ):
        align_series_to_graph(series, graph, origin="data.h5")


def test_align_drop_unmatched_keeps_intersection_in_series_order(caplog):
    graph = _graph(["a", "b", "c", "d"])
    with caplog.at_level(logging.WARNING):
        keep, weights = align_series_to_graph(["x", "c", "a", "y"], graph, drop_unmatched=True, origin="data.csv")
    np.testing.assert_array_equal(keep, [1, 2])
    np.testing.assert_array_equal(weights, graph.weights[np.ix_([2, 0], [2, 0])])
    assert "data.csv" in caplog.text and "'x', 'y'" in caplog.text and "'b', 'd'" in caplog.text


def test_align_with_nothing_in_common_fails_even_when_dropping():
    with raises_mentioning("data.npz", "0 in common", "dropping cannot help"):
        align_series_to_graph(["0", "1"], _graph(["773869", "767541"]), drop_unmatched=True, origin="data.npz")


def test_graph_validates_itself():
    with raises_mentioning("g.csv", "duplicate node ids", "'a'"):
        Graph(["a", "a"], np.eye(2), origin="g.csv")
    with raises_mentioning("g.csv", "must be [3, 3]"):
        Graph(["a", "b", "c"], np.eye(2), origin="g.csv")
    with raises_mentioning("g.csv", "non-finite weight", "a -> b"):
        Graph(["a", "b"], np.array([[1, np.nan], [0, 1]]), origin="g.csv")
