"""How the ONNX files beside this script were made (not run by the tests: it needs torch and
torchvision, which the project does not depend on).

    pip install torch==2.14.1 torchvision==0.29.1 onnx onnxscript
    python export_torchvision.py

Random weights (no downloads); small 64x64 inputs keep the files small.
- shufflenet_v2.ts.onnx        TorchScript exporter, opset 17, dynamic batch: channel shuffles
                               with run-time shapes, depthwise convs
- mobilenet_v3_small.dynamo.onnx (+ .data)  dynamo exporter: opset 18, external data,
                               squeeze-excite 1x1 convs on 1x1 maps
- dcgan.ts.onnx                TorchScript exporter: a DCGAN generator's ConvTranspose stack
- net1d.ts.onnx                TorchScript: 1-D convs (1280 channels, stride and dilation 2)
- net3d.dynamo.onnx (+ .data)  dynamo: 3-D convs (600 channels, stride 2)
"""

import torch
from torchvision import models


class DCGAN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.ConvTranspose2d(64, 128, 4, 1, 0), torch.nn.ReLU(),
            torch.nn.ConvTranspose2d(128, 64, 4, 2, 1), torch.nn.ReLU(),
            torch.nn.ConvTranspose2d(64, 3, 4, 2, 1), torch.nn.Tanh())

    def forward(self, x):
        return self.net(x)


class Net1d(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Conv1d(16, 1280, 5, padding=2)
        self.b = torch.nn.Conv1d(1280, 64, 3, stride=2, dilation=2, padding=2)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


class Net3d(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Conv3d(4, 600, 3, padding=1)
        self.b = torch.nn.Conv3d(600, 8, 3, stride=2, padding=1)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


def export(model, shape, path, dynamo):
    torch.manual_seed(0)
    kwargs = {"dynamo": dynamo, "input_names": ["x"]}
    if not dynamo:
        kwargs.update(opset_version=17, dynamic_axes={"x": {0: "N"}})
    torch.onnx.export(model.eval(), (torch.randn(*shape),), path, **kwargs)


if __name__ == "__main__":
    torch.manual_seed(0)
    export(models.shufflenet_v2_x0_5(), (1, 3, 64, 64), "shufflenet_v2.ts.onnx", False)
    torch.manual_seed(0)
    export(models.mobilenet_v3_small(), (1, 3, 64, 64), "mobilenet_v3_small.dynamo.onnx", True)
    torch.manual_seed(0)
    export(DCGAN(), (1, 64, 1, 1), "dcgan.ts.onnx", False)
    torch.manual_seed(0)
    export(Net1d(), (1, 16, 50), "net1d.ts.onnx", False)
    torch.manual_seed(0)
    export(Net3d(), (1, 4, 6, 8, 8), "net3d.dynamo.onnx", True)
