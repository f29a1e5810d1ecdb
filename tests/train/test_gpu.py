"""GPU checks (run by scripts/device_check.sh on a lent GPU; skipped elsewhere with the reason)."""

import pytest
import torch

from cfnsr.model import create_model
from cfnsr.model.summary import example_inputs

pytestmark = pytest.mark.gpu


def test_cuda_forward_matches_cpu():
    torch.manual_seed(0)
    model = create_model("cfn-sr-tiny").eval()
    inputs = example_inputs(model.config, batch=2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        cpu = model(*inputs)
        gpu = model.cuda()(*(t.cuda() for t in inputs)).cpu()
    torch.testing.assert_close(gpu, cpu, atol=1e-3, rtol=1e-3)


def test_mixed_precision_training_step_is_finite():
    from cfnsr.train.trainer import amp_dtype

    device = torch.device("cuda")
    dtype = amp_dtype("auto", device)
    assert dtype in (torch.bfloat16, torch.float16)
    model = create_model("cfn-sr-tiny").to(device).train()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    video, audio = (t.to(device) for t in example_inputs(model.config, batch=4))
    label = torch.arange(4, device=device)
    before = model.fc.weight.detach().clone()
    with torch.autocast("cuda", dtype=dtype):
        loss = torch.nn.functional.cross_entropy(model(video, audio).float(), label)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    assert torch.isfinite(loss) and not torch.equal(before, model.fc.weight)
