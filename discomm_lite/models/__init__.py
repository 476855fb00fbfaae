"""The networks: backbones (torchvision, timm, a small CPU convnet) and backbone + head on
multi-crop views, the student and its EMA teacher (`model`)."""
