import pytest
import torch

from dfml.types import Task, TaskSource


def make(n_way=3, n_shot=2, n_query=4, dim=5):
    return Task(
        torch.randn(n_way * n_shot, dim),
        torch.arange(n_way).repeat_interleave(n_shot),
        torch.randn(n_way * n_query, dim),
        torch.arange(n_way).repeat_interleave(n_query),
        TaskSource(model_id=1, classes=(7, 8, 9)),
    )


def test_task_reports_its_shape():
    t = make()
    assert (t.n_way, t.n_shot, t.n_query) == (3, 2, 4)


def test_task_to_casts_inputs_only():
    t = make().to("cpu", torch.float64)
    assert t.support_x.dtype == torch.float64 and t.support_y.dtype == torch.int64
    assert t.source.classes == (7, 8, 9)


def test_task_rejects_mismatched_rows_and_shapes():
    with pytest.raises(ValueError, match="support_x has 6 rows but support_y has 5"):
        Task(torch.randn(6, 2), torch.zeros(5, dtype=torch.long), torch.randn(2, 2), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="differ in shape"):
        Task(torch.randn(2, 2), torch.zeros(2, dtype=torch.long), torch.randn(2, 3), torch.zeros(2, dtype=torch.long))
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        Task([1], torch.zeros(1), torch.randn(1, 1), torch.zeros(1))
