# SPDX-License-Identifier: BSD-3-Clause
"""End-to-end demo: train an embedding model with a backward net that caffe2op generates.

The model ranks items for users (BPR, Rendle et al. 2009).  For a user
``u`` with a positive item ``i`` and a sampled negative item ``j``::

    query  = user_emb[u] + StopGradient(features[u] @ tower_w)
    margin = query . item_emb[i] - query . item_emb[j]
    loss   = mean(log(1 + exp(-margin)))

Everything runs through caffe2op:

* **User operators written in Python with NumPy**, each with a schema, one
  implementation class registered for the CPU, OpenCL and CUDA devices
  (on a device it reads and writes the blobs through the device backend)
  and a gradient maker: ``EmbeddingLookup`` (its table gradient is a
  :class:`~caffe2op.GradientSlice` of the looked-up ids and the rows'
  gradients, produced by no operator at all), ``RowDot``, ``Linear``,
  ``BPRLoss`` and the optimizer ``SparseSGD``.
* **The backward net is generated** by
  :meth:`~caffe2op.Net.add_gradient_operators`: the query feeds two
  ``RowDot`` operators, so its gradients are added with an automatic
  ``Sum``; the item table is read by two lookups, so its sparse gradients
  are joined with two automatic ``Concat`` operators.
* **StopGradient** freezes the pretrained side tower (``tower_w``): no
  gradient operator is generated for it and its weights stay bit-identical.
* **ZeroGradient** marks ``margin``, the auxiliary output of ``BPRLoss``
  that only the accuracy report reads: ``BPRLoss``'s gradient needs the
  gradients of both its outputs, and without ZeroGradient the backward pass
  cannot be built.
* **SparseNormalize** runs after every SGD step on the rows that step
  touched: max-norm regularisation, as Caffe2's ``MaxNorm`` regularizer
  did, so every embedding row stays within ``norm``.

Run it with ``python -m caffe2op demo [--device NAME] [--epochs N] [--seed S]``,
or call :func:`run_demo`.

Examples
--------
>>> from caffe2op.examples.embedding_demo import run_demo
>>> result = run_demo(epochs=2, seed=0, n_examples=2048, progress=False, out=None)
>>> result.losses[-1] < result.losses[0] < result.initial_loss, result.max_row_norm <= result.norm * (1 + 1e-6)
(True, True)
>>> result.tower_unchanged, "tower_w" in result.grad_map
(True, False)
"""

import argparse
import dataclasses
import sys
import time

import numpy as np

from .. import (
    DeviceOption,
    DeviceType,
    Net,
    Workspace,
    device_scope,
    opencl,
    opencl_devices,
    registered_operators,
)
from ..devices import backend_for
from . import demo_operators  # noqa: F401  (registers the demo's operators)

__all__ = ["DemoResult", "main", "resolve_device", "run_demo"]

# --- devices --------------------------------------------------------------------------------------


def _platform_is_cpu_only(info):
    # PoCL runs OpenCL on the host CPU: no faster than the CPU kernels for this demo.
    return "portable computing language" in info.platform.lower() or "pocl" in info.platform.lower()


def resolve_device(name=None):
    """The :class:`~caffe2op.DeviceOption` for ``--device``, checked to be usable, and why it was chosen.

    Parameters
    ----------
    name : str or None
        A device name of the functional API's ``device=`` argument, read by the
        same parser (:func:`caffe2op.opencl.resolve_device`; see
        :ref:`device-names`): ``"cpu"``, ``"opencl"``, ``"opencl:N"``,
        ``"cuda"``, ``"cuda:N"``, ``"gpu"``, ``"gpu:N"``.  None picks the best
        available: the first NVIDIA device (``cuda:N``), else the first
        OpenCL device that is not a CPU implementation such as PoCL
        (``opencl:N``), else the CPU.  A default device whose layer fails to
        start falls back to the CPU.

    Returns
    -------
    tuple of (DeviceOption, str, str)
        The device, its readable name, and why it was chosen.

    Raises
    ------
    ValueError
        If ``name`` is not a device name.
    RuntimeError
        If the device asked for is not available (the message lists what is).

    Examples
    --------
    >>> from caffe2op.examples.embedding_demo import resolve_device
    >>> resolve_device("cpu")
    (DeviceOption(device_type=<DeviceType.CPU: 0>, device_id=0), 'CPU', 'asked for with --device cpu')
    """
    infos = opencl_devices()
    if name is None:
        return _default_device(infos)
    try:
        option = opencl.resolve_device(name)
    except (TypeError, ValueError) as err:
        raise ValueError(f"demo: --device {name!r}: {err} (see the device names in the install guide)") from err
    except RuntimeError as err:  # "opencl" without any OpenCL device
        raise RuntimeError(f"demo: --device {name} is not available: {err}; use --device cpu") from err
    why = f"asked for with --device {name}"
    if option.device_type == DeviceType.CPU:
        return option, "CPU", why
    listing = "; ".join(f"OPENCL:{d.index} {d.name} ({d.platform})" for d in infos) or "none"
    kind = option.device_type.name
    candidates = infos if option.device_type == DeviceType.OPENCL else [d for d in infos if d.cuda_index is not None]
    index = option.device_id
    if index >= len(candidates):
        raise RuntimeError(
            f"demo: --device {name} is not available: {len(candidates)} {kind} device(s) found "
            f"(OpenCL devices: {listing}); use --device cpu"
        )
    try:
        backend_for(option)
    except Exception as err:  # the device layer reports its own reasons; keep them
        raise RuntimeError(f"demo: --device {name} cannot be used: {err}") from err
    missing = [t for t in _NET_OPERATOR_TYPES if t not in registered_operators(option.device_type)]
    if missing:
        raise RuntimeError(
            f"demo: --device {name}: no {kind} implementation of {', '.join(missing)} in this build; use --device cpu"
        )
    return option, f"{kind}:{index} ({candidates[index].name})", why


def _default_device(infos):
    """The device the demo picks without ``--device``, and why (see :func:`resolve_device`)."""
    # The first NVIDIA device, else the first OpenCL device that is not PoCL, by its own index.
    choices = [(f"cuda:{d.cuda_index}", "the first NVIDIA device") for d in infos if d.cuda_index is not None][:1]
    choices += [
        (f"opencl:{d.index}", "the first OpenCL device that is not PoCL") for d in infos if not _platform_is_cpu_only(d)
    ][:1]
    failures = []
    for choice, reason in choices:
        try:
            option, device_name, _ = resolve_device(choice)
        except RuntimeError as err:
            failures.append(f"{choice} could not be used ({str(err).removeprefix('demo: ')})")
            continue
        return option, device_name, f"the default: {reason} (--device cpu runs on the CPU)"
    if failures:
        why = "; ".join(failures)
    elif infos:
        pocl = ", ".join(f"OPENCL:{d.index}" for d in infos)
        why = f"the OpenCL devices ({pocl}) are PoCL on this CPU, no faster than the CPU kernels"
    else:
        why = "no OpenCL device was found (python -m caffe2op config says why)"
    return DeviceOption(DeviceType.CPU, 0), "CPU", f"the default: {why}"


# Every operator type the training net runs, built-in ones included.
_NET_OPERATOR_TYPES = (
    "EmbeddingLookup",
    "Linear",
    "StopGradient",
    "Sum",
    "RowDot",
    "RowDotGradient",
    "BPRLoss",
    "BPRLossGradient",
    "ZeroGradient",
    "ConstantFill",
    "Concat",
    "SparseSGD",
    "SparseNormalize",
)


# --- data and model -------------------------------------------------------------------------------


@dataclasses.dataclass
class DemoResult:
    """What :func:`run_demo` measured.

    Attributes
    ----------
    device : str
        The device the nets ran on.
    initial_loss : float
        Mean loss over the training triples before training (forward net only).
    losses : list of float
        Mean training loss of each epoch.
    accuracies : list of float
        Fraction of training triples ranked right (positive above negative), per epoch.
    max_row_norm : float
        Largest L2 norm of any row of the two embedding tables after training.
    norm : float
        The max-norm bound given to SparseNormalize.
    tower_unchanged : bool
        Whether the frozen tower's weights are bit-identical after training.
    tower_before, tower_after : numpy.ndarray
        The tower's weights before and after training.
    tables : dict
        The trained embedding tables (``user_emb``, ``item_emb``) as NumPy arrays.
    grad_map : dict
        The gradient map returned by ``add_gradient_operators``.
    forward_net, backward_net, update_net : Net
        The three parts of the training net, in the order they run.
    seconds : float
        Wall time of the training loop.

    Examples
    --------
    >>> from caffe2op.examples.embedding_demo import run_demo
    >>> r = run_demo("cpu", epochs=1, n_users=20, n_items=30, n_examples=256, progress=False, out=None)
    >>> sorted(r.tables), r.norm
    (['item_emb', 'user_emb'], 1.0)
    """

    device: str
    initial_loss: float
    losses: list
    accuracies: list
    max_row_norm: float
    norm: float
    tower_unchanged: bool
    tower_before: np.ndarray
    tower_after: np.ndarray
    tables: dict
    grad_map: dict
    forward_net: Net
    backward_net: Net
    update_net: Net
    seconds: float


def make_data(rng, n_users, n_items, dim, n_features, n_examples):
    """Synthetic triples (user, liked item, random item) from a hidden low-rank taste model.

    Users' tastes are mostly a linear function of their features (what the
    "pretrained" tower captured), plus a personal part only a user embedding
    can learn.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness.
    n_users, n_items, dim, n_features, n_examples : int
        Sizes.

    Returns
    -------
    tuple
        ``(features, pretrained_tower, users, positives, negatives)``: user
        features (float32, n_users x n_features), the tower's weights
        (float32, n_features x dim) and three int64 vectors of length
        ``n_examples``.

    Examples
    --------
    >>> import numpy as np
    >>> from caffe2op.examples.embedding_demo import make_data
    >>> features, tower, users, pos, neg = make_data(np.random.default_rng(0), 10, 20, 4, 3, 100)
    >>> features.shape, tower.shape, users.shape, int(pos.max()) < 20
    ((10, 3), (3, 4), (100,), True)
    """
    features = rng.normal(size=(n_users, n_features)).astype(np.float32)
    true_tower = rng.normal(scale=1.0 / np.sqrt(n_features), size=(n_features, dim))
    true_users = features @ true_tower + 0.7 * rng.normal(size=(n_users, dim))
    true_items = rng.normal(size=(n_items, dim))
    users = rng.integers(0, n_users, size=n_examples)
    # A user's liked item: the best of a few random candidates under the hidden tastes.
    candidates = rng.integers(0, n_items, size=(n_examples, 8))
    scores = np.einsum("nd,ncd->nc", true_users[users], true_items[candidates])
    positives = candidates[np.arange(n_examples), np.argmax(scores, axis=1)]
    negatives = rng.integers(0, n_items, size=n_examples)
    pretrained_tower = (true_tower + 0.05 * rng.normal(size=true_tower.shape)) / np.sqrt(dim)
    return features, pretrained_tower.astype(np.float32), users, positives, negatives


def build_training_net(lr, norm):
    """The training net: forward operators, the generated backward operators, then the sparse updates.

    Parameters
    ----------
    lr : float
        SparseSGD's learning rate.
    norm : float
        SparseNormalize's max-norm bound.

    Returns
    -------
    tuple of (Net, Net, Net, Net, dict)
        The whole net, its forward, backward and update parts (for display)
        and the gradient map.

    Examples
    --------
    >>> from caffe2op.examples.embedding_demo import build_training_net
    >>> net, forward, backward, update, grad_map = build_training_net(lr=1.0, norm=1.0)
    >>> grad_map["item_emb"]
    GradientSlice(indices='item_emb_grad_indices_concat', values='item_emb_grad_values_concat')
    >>> len(net) == len(forward) + len(backward) + len(update)
    True
    """
    net = Net("embedding_train")
    user_vec = net.EmbeddingLookup(["user_emb", "user_ids"], "user_vec")
    side = net.Linear(["user_features", "tower_w"], "side")
    side_frozen = net.StopGradient(side, "side_frozen")  # the pretrained tower learns nothing
    query = net.Sum([user_vec, side_frozen], "query")
    pos_vec = net.EmbeddingLookup(["item_emb", "pos_ids"], "pos_vec")
    neg_vec = net.EmbeddingLookup(["item_emb", "neg_ids"], "neg_vec")
    s_pos = net.RowDot([query, pos_vec], "s_pos")
    s_neg = net.RowDot([query, neg_vec], "s_neg")
    net.BPRLoss([s_pos, s_neg], ["loss", "margin"])
    net.ZeroGradient("margin", [])  # margin is only reported: it gets an all-zero gradient
    n_forward = len(net.ops)

    grad_map = net.add_gradient_operators(["loss"])
    n_backward = len(net.ops)

    for param in ("user_emb", "item_emb"):
        grad = grad_map[param]  # a GradientSlice: only the rows this batch touched
        net.SparseSGD([param, grad.indices, grad.values], param, lr=lr)
        net.SparseNormalize([param, grad.indices], param, use_max_norm=True, norm=norm)

    parts = []
    for title, ops in (
        ("forward", net.ops[:n_forward]),
        ("backward (generated by add_gradient_operators)", net.ops[n_forward:n_backward]),
        ("update (SparseSGD + SparseNormalize max-norm)", net.ops[n_backward:]),
    ):
        part = Net(title)
        part.ops = list(ops)
        parts.append(part)
    return (net, *parts, grad_map)


_STDOUT = object()  # "sys.stdout when called", so that redirections made later are honoured


def _write(out, text=""):
    if out is not None:
        print(text, file=out, flush=True)


def run_demo(
    device=None,
    epochs=5,
    seed=0,
    *,
    n_users=1000,
    n_items=2000,
    dim=16,
    n_features=8,
    n_examples=65536,
    batch_size=256,
    lr=16.0,
    norm=1.0,
    progress=True,
    out=_STDOUT,
):
    """Train the demo model and return what it measured.

    Parameters
    ----------
    device : str or None, default None
        A device name, as the functional API's ``device=`` (``"cpu"``,
        ``"opencl"``, ``"opencl:N"``, ``"cuda"``, ``"cuda:N"``, ``"gpu"``), or
        None for the best available (see :func:`resolve_device`).
    epochs : int, default 5
        Passes over the training triples.
    seed : int, default 0
        Seeds the data, the initial embeddings and the shuffling.
    n_users, n_items, dim, n_features, n_examples, batch_size : int
        Sizes of the synthetic problem.
    lr : float, default 16.0
        Learning rate of SparseSGD (the loss is a mean over the batch).
    norm : float, default 1.0
        Max-norm bound applied by SparseNormalize to every touched row (a
        rescaled float32 row lands on ``norm`` up to rounding, about 1e-7
        relative).
    progress : bool, default True
        Report progress on stderr: a tqdm progress bar per epoch when stderr
        is a terminal, else one line per epoch (for logs).
    out : file or None, optional
        Where to print the nets and the report (default: ``sys.stdout`` at
        the time of the call); None prints nothing.

    Returns
    -------
    DemoResult
        Losses, accuracies, norms, the frozen-tower check and the nets.

    Raises
    ------
    ValueError
        If a size or ``epochs`` is not positive, or ``device`` is malformed.
    RuntimeError
        If the device asked for is not available.

    Examples
    --------
    >>> from caffe2op.examples.embedding_demo import run_demo
    >>> r = run_demo("cpu", epochs=2, n_users=50, n_items=80, n_examples=1024, progress=False, out=None)
    >>> r.losses[-1] < r.initial_loss, r.tower_unchanged
    (True, True)
    """
    for what, value in (
        ("epochs", epochs),
        ("n_users", n_users),
        ("n_items", n_items),
        ("dim", dim),
        ("n_features", n_features),
        ("n_examples", n_examples),
        ("batch_size", batch_size),
    ):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"demo: {what} must be a positive int, got {value!r}")
    if out is _STDOUT:
        out = sys.stdout
    option, device_name, why = resolve_device(device)
    rng = np.random.default_rng(seed)
    features, tower, users, positives, negatives = make_data(rng, n_users, n_items, dim, n_features, n_examples)
    user_emb = rng.normal(scale=0.05, size=(n_users, dim)).astype(np.float32)
    item_emb = rng.normal(scale=0.05, size=(n_items, dim)).astype(np.float32)

    with device_scope(option):
        net, forward_net, backward_net, update_net, grad_map = build_training_net(lr, norm)
    _write(out, f"caffe2op demo: ranking embeddings trained with a generated backward net, on {device_name}")
    _write(out, f"  device: {why}")
    _write(
        out,
        f"  {n_users} users, {n_items} items, dim {dim}, {n_examples} training triples, batch {batch_size}, "
        f"lr {lr}, max-norm {norm}, seed {seed}",
    )
    for part in (forward_net, backward_net, update_net):
        _write(out)
        _write(out, str(part))
    _write(out)

    ws = Workspace()
    for name, value in (("user_emb", user_emb), ("item_emb", item_emb), ("tower_w", tower)):
        ws.feed_blob(name, value, option)
    tower_before = ws.fetch_blob("tower_w")

    from tqdm import tqdm

    def feed(batch):
        u = users[batch]
        ws.feed_blob("user_ids", u, option)
        ws.feed_blob("pos_ids", positives[batch], option)
        ws.feed_blob("neg_ids", negatives[batch], option)
        ws.feed_blob("user_features", features[u], option)

    n_batches = -(-n_examples // batch_size)
    terminal = sys.stderr.isatty() if hasattr(sys.stderr, "isatty") else False
    start = time.perf_counter()
    # The untrained model's loss: the forward operators alone, over every triple.
    initial_loss = 0.0
    for b in range(n_batches):
        batch = np.arange(b * batch_size, min((b + 1) * batch_size, n_examples))
        feed(batch)
        ws.run_net(forward_net)
        initial_loss += float(ws.fetch_blob("loss")) * len(batch) / n_examples
    losses, accuracies = [], []
    for epoch in range(epochs):
        order = rng.permutation(n_examples)
        total_loss = total_right = 0.0
        epoch_start = time.perf_counter()
        bar = tqdm(
            range(n_batches),
            desc=f"epoch {epoch + 1}/{epochs}",
            unit="batch",
            file=sys.stderr,
            disable=not (progress and terminal),
            leave=True,
        )
        for b in bar:
            batch = order[b * batch_size : (b + 1) * batch_size]
            feed(batch)
            ws.run_net(net)
            loss = float(ws.fetch_blob("loss"))
            total_loss += loss * len(batch)
            total_right += float(np.sum(ws.fetch_blob("margin") > 0))
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
        bar.close()
        losses.append(total_loss / n_examples)
        accuracies.append(total_right / n_examples)
        if progress and not terminal:  # a log gets one line per epoch, not the bar's redraws
            print(
                f"epoch {epoch + 1}/{epochs}: {n_batches} batches, mean loss {losses[-1]:.4f}, "
                f"{time.perf_counter() - epoch_start:.2f} s",
                file=sys.stderr,
                flush=True,
            )
    seconds = time.perf_counter() - start

    tables = {name: ws.fetch_blob(name) for name in ("user_emb", "item_emb")}
    row_norms = {name: float(np.linalg.norm(t.astype(np.float64), axis=1).max()) for name, t in tables.items()}
    tower_after = ws.fetch_blob("tower_w")
    tower_unchanged = tower_after.dtype == tower_before.dtype and tower_after.tobytes() == tower_before.tobytes()
    result = DemoResult(
        device=device_name,
        initial_loss=initial_loss,
        losses=losses,
        accuracies=accuracies,
        max_row_norm=max(row_norms.values()),
        norm=norm,
        tower_unchanged=tower_unchanged,
        tower_before=tower_before,
        tower_after=tower_after,
        tables=tables,
        grad_map=grad_map,
        forward_net=forward_net,
        backward_net=backward_net,
        update_net=update_net,
        seconds=seconds,
    )

    _write(out, "epoch  mean loss  ranking accuracy")
    _write(out, f"{0:5d}  {initial_loss:9.4f}  {'(before training)':>17}")
    for epoch, (loss, accuracy) in enumerate(zip(losses, accuracies, strict=True), start=1):
        _write(out, f"{epoch:5d}  {loss:9.4f}  {accuracy:15.1%}")
    fell = losses[-1] < initial_loss
    _write(out, f"loss {'fell' if fell else 'did NOT fall'}: {initial_loss:.4f} -> {losses[-1]:.4f}")
    bounded = result.max_row_norm <= norm * (1 + 1e-6)
    _write(
        out,
        f"largest row norm: user_emb {row_norms['user_emb']:.6f}, item_emb {row_norms['item_emb']:.6f} "
        f"({'within' if bounded else 'ABOVE'} max-norm {norm})",
    )
    frozen_grads = sorted(name for name in ("tower_w", "side", "user_features") if name in grad_map)
    _write(
        out,
        f"frozen tower: tower_w {'bit-identical' if tower_unchanged else 'CHANGED'} after "
        f"{epochs * n_batches} steps; gradients reaching it: {', '.join(frozen_grads) or 'none'}",
    )
    _write(out, f"trained in {seconds:.2f} s")
    return result


def main(argv=None):
    """Command line of the demo: ``python -m caffe2op demo [--device D] [--epochs N] [--seed S]``.

    Parameters
    ----------
    argv : list of str, optional
        Arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        0 when the loss fell below the untrained model's, the norms are
        bounded and the tower is unchanged; 1 otherwise; 2 for a bad or
        unavailable device.
    """
    parser = argparse.ArgumentParser(prog="python -m caffe2op demo", description=__doc__.split("\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run_from_args(args)


def add_arguments(parser):
    """Add the demo's options to an argparse parser.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The parser (or subparser) to extend.
    """
    parser.add_argument(
        "--device",
        default=None,
        metavar="NAME",
        help="where the nets run: cpu, opencl, opencl:N, cuda, cuda:N or gpu (= cuda), the device names "
        "of the functional API's device= argument. Default: the first NVIDIA device, else the first "
        "OpenCL device that is not PoCL, else the CPU; the demo prints its choice and why",
    )
    parser.add_argument("--epochs", type=int, default=5, help="passes over the training data (default: 5)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument(
        "--quiet", action="store_true", help="no progress report (a bar per epoch on a terminal, else a line)"
    )


def run_from_args(args):
    """Run the demo from parsed arguments; return the exit status.

    Parameters
    ----------
    args : argparse.Namespace
        With ``device``, ``epochs``, ``seed`` and ``quiet``.

    Returns
    -------
    int
        As :func:`main`.
    """
    try:
        result = run_demo(args.device, args.epochs, args.seed, progress=not args.quiet)
    except (RuntimeError, ValueError) as err:
        if not str(err).startswith("demo:"):
            raise  # a bug, not a bad option: keep the traceback
        print(f"error: {err}", file=sys.stderr)
        return 2
    ok = result.losses[-1] < result.initial_loss and result.max_row_norm <= result.norm * (1 + 1e-6)
    return 0 if ok and result.tower_unchanged else 1


if __name__ == "__main__":
    sys.exit(main())
