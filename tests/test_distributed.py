"""dfml.distributed alone (no launcher): a world of one process, and the checks on a launch's environment.

The multi-process behaviour is tested with real torchrun launches in tests/distributed/.
"""

from __future__ import annotations

import pytest
import torch

from dfml import distributed as dist
from dfml.eval import evaluate, evaluate_sharded
from dfml.inversion.batched import model_generators
from dfml.inversion.sharded import shard_map
from dfml.meta import MAML
from dfml.meta.parallel import data_parallel_update
from dfml.models import build_model
from dfml.types import Task


@pytest.fixture(autouse=True)
def _no_launch(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)


def tasks(n: int, seed: int = 0) -> list[Task]:
    g = torch.Generator().manual_seed(seed)
    return [Task(torch.randn(5, 8, generator=g), torch.arange(5), torch.randn(10, 8, generator=g),
                 torch.arange(5).repeat(2)) for _ in range(n)]


def test_alone_the_world_is_one_process_and_every_collective_is_the_identity() -> None:
    assert (dist.rank(), dist.world_size(), dist.is_main(), dist.is_distributed()) == (0, 1, True, False)
    assert dist.init() is False and dist.backend() is None
    assert dist.shard(range(5)) == [0, 1, 2, 3, 4]
    assert dist.gather_shards(["a", "b"], 2) == ["a", "b"]
    assert dist.broadcast_object({"x": 1}) == {"x": 1} and dist.all_gather_object(3) == [3]
    t = torch.ones(2)
    assert dist.all_reduce_sum(t) is t and torch.equal(t, torch.ones(2))
    with dist.launched() as launched, dist.main_first():
        assert launched is False
    dist.barrier()


def test_gather_shards_refuses_a_share_of_the_wrong_size() -> None:
    with pytest.raises(ValueError, match="rank 0 has 1 results for a share of 3 of 3 items"):
        dist.gather_shards([1], 3)


def test_a_launch_environment_without_a_rendezvous_address_names_torchrun(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(RuntimeError, match=r"MASTER_ADDR, MASTER_PORT not set; launch with `torchrun"):
        dist.init()
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE='two' is not an integer"):
        dist.init()


def test_a_bare_cuda_device_goes_to_the_local_rank_under_a_launch(monkeypatch: pytest.MonkeyPatch) -> None:
    assert dist.device_for("cuda") == torch.device("cuda")
    assert dist.device_for(None) == torch.device("cpu")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert dist.device_for("cuda") == torch.device("cuda", 3)
    assert dist.device_for("cuda:1") == torch.device("cuda", 1)  # an explicit index is kept
    assert dist.device_for("cpu") == torch.device("cpu")


def test_alone_the_data_parallel_update_is_the_meta_step() -> None:
    results = []
    for parallel in (False, True):
        torch.manual_seed(0)
        learner = MAML(build_model("mlp", in_features=8, num_classes=5, hidden=[6]).double(), inner_steps=1)
        opt = torch.optim.Adam(learner.parameters(), lr=0.1)
        m = (data_parallel_update if parallel else lambda l, t, o: l.meta_step(t, o))(learner, tasks(3), opt)
        results.append((learner.state_dict(), m))
    assert results[0][1] == results[1][1]
    assert all(torch.equal(results[0][0][k], results[1][0][k]) for k in results[0][0])


def test_alone_shard_map_is_the_work_on_every_item_with_per_item_generators() -> None:
    def work(mine: list[int], rngs: list[torch.Generator]) -> list[torch.Tensor]:
        return [torch.rand(2, generator=r) + m for m, r in zip(mine, rngs)]

    got = shard_map(3, torch.Generator().manual_seed(5), work, "cpu")
    want = work([0, 1, 2], model_generators(torch.Generator().manual_seed(5), 3))
    assert all(torch.equal(a, b) for a, b in zip(got, want))
    with pytest.raises(ValueError, match="work returned 1 results for a share of 3 items"):
        shard_map(3, torch.Generator(), lambda mine, rngs: [torch.zeros(1)], "cpu")


def test_alone_sharded_evaluation_is_evaluation() -> None:
    torch.manual_seed(0)
    net = build_model("mlp", in_features=8, num_classes=5, hidden=[6])
    a = evaluate(net, tasks(4), steps=2, lr=0.1)
    b = evaluate_sharded(net, tasks(4), steps=2, lr=0.1)
    assert (a.mean, a.ci95, a.per_episode, a.info) == (b.mean, b.ci95, b.per_episode, b.info)
