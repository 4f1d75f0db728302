# SPDX-License-Identifier: BSD-3-Clause
"""RowNormConstraint: Caffe2's MaxNorm/ConstantNorm regularizer (SparseNormalize after the update) for PyTorch."""

import torch

from caffe2op.ops.sparse_normalize.functional import sparse_normalize

__all__ = ["RowNormConstraint"]


def _distributed_world():
    """The default process group's size, or 1 outside ``torch.distributed``."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


class RowNormConstraint:
    """Renormalise, after every optimizer step, exactly the embedding rows that step touched.

    The rows are those of the sparse gradient (``nn.Embedding(sparse=True)``),
    or, for dense gradients, the indices the module looked up in its forward
    passes since the last step (recorded by a forward pre-hook).  Each such
    row ``r`` with L2 norm ``n`` becomes ``r * norm / (n + 1e-12)`` when
    ``n > norm`` (``use_max_norm=True``, Caffe2's MaxNorm) or always
    (``use_max_norm=False``, ConstantNorm: the rows live on a sphere).  The
    update is in place, under ``torch.no_grad()``, outside the autograd graph.

    Parameters
    ----------
    module_or_weight : torch.nn.Module or torch.Tensor
        An ``nn.Embedding``/``nn.EmbeddingBag`` (or any module with a 2-D
        ``weight`` whose forward takes the indices first), or a 2-D weight
        tensor (then only sparse gradients, or rows passed to :meth:`apply`,
        say which rows to renormalise; with a dense gradient the rows whose
        gradient is non-zero are taken).
    norm : float, default 1.0
        Target (ConstantNorm) or largest allowed (MaxNorm) L2 norm, >= 0.
    use_max_norm : bool, default True
        True: only rows whose norm exceeds ``norm`` are scaled down.  False:
        every touched row is scaled to norm ``norm``.

    Raises
    ------
    TypeError
        If ``module_or_weight`` is neither a module with a ``weight`` nor a tensor.
    ValueError
        If the weight is not a 2-D floating-point CPU tensor.

    See Also
    --------
    caffe2op.sparse_normalize : the operation applied to the touched rows.
    embedding_renorm_ : torch's rule during the forward pass, as a fast drop-in.

    Notes
    -----
    Under ``torch.distributed`` (any backend, e.g. gloo) the ranks' touched
    rows are gathered, so every replica renormalises the union: with
    identical updates (DDP) the replicas stay bit-identical, since the kernel's
    results do not depend on the thread count.

    Examples
    --------
    >>> import torch, caffe2op.torch
    >>> _ = torch.manual_seed(0)
    >>> emb = torch.nn.Embedding(10, 4, sparse=True)
    >>> opt = torch.optim.SGD(emb.parameters(), lr=1.0)
    >>> constraint = caffe2op.torch.RowNormConstraint(emb, norm=1.0, use_max_norm=False)
    >>> handle = constraint.attach(opt)
    >>> emb(torch.tensor([1, 3])).sum().backward()
    >>> opt.step()
    >>> torch.allclose(emb.weight.detach().norm(dim=1)[[1, 3]], torch.ones(2))
    True
    """

    def __init__(self, module_or_weight, norm=1.0, use_max_norm=True):
        if isinstance(module_or_weight, torch.nn.Module):
            weight = getattr(module_or_weight, "weight", None)
            if not isinstance(weight, torch.Tensor):
                raise TypeError(
                    f"RowNormConstraint: {type(module_or_weight).__name__} has no weight tensor to constrain"
                )
            self.module = module_or_weight
        elif isinstance(module_or_weight, torch.Tensor):
            weight = module_or_weight
            self.module = None
        else:
            raise TypeError(
                "RowNormConstraint: expected an nn.Module with a weight or a tensor, "
                f"got {type(module_or_weight).__name__}"
            )
        if weight.dim() != 2 or not weight.is_floating_point() or weight.device.type != "cpu":
            raise ValueError(
                "RowNormConstraint: the weight must be a 2-D floating-point CPU tensor, "
                f"got shape {tuple(weight.shape)}, {weight.dtype} on {weight.device}"
            )
        sparse_normalize(torch.empty((1, 1), dtype=weight.dtype), [], use_max_norm=use_max_norm, norm=norm)
        self.weight = weight
        self.norm = float(norm)
        self.use_max_norm = bool(use_max_norm)
        self._seen = []
        self._handles = []
        if self.module is not None:
            self._handles.append(self.module.register_forward_pre_hook(self._record))

    def _record(self, module, args):
        if args and isinstance(args[0], torch.Tensor) and module.training:
            self._seen.append(args[0].detach().reshape(-1))

    def touched_rows(self):
        """The rows the coming step touches (may repeat), and forget the recorded lookups.

        Returns
        -------
        torch.Tensor
            int64 row indices, on every rank the same under ``torch.distributed``.

        Examples
        --------
        >>> import torch, caffe2op.torch
        >>> emb = torch.nn.Embedding(10, 4)
        >>> constraint = caffe2op.torch.RowNormConstraint(emb)
        >>> _ = emb(torch.tensor([[2, 5], [5, 7]]))
        >>> constraint.touched_rows()
        tensor([2, 5, 5, 7])
        """
        grad = self.weight.grad
        if grad is not None and grad.is_sparse:
            rows = grad._indices()[0]
        elif self._seen:
            rows = torch.cat(self._seen).to(torch.int64)
        elif grad is not None and self.module is None:
            rows = grad.reshape(grad.shape[0], -1).ne(0).any(dim=1).nonzero().reshape(-1)
        else:
            rows = torch.empty(0, dtype=torch.int64)
        self._seen = []
        if _distributed_world() > 1:
            rows = _union_over_ranks(rows)
        return rows

    def apply(self, rows=None):
        """Renormalise ``rows`` (default: :meth:`touched_rows`) of the weight in place, under ``no_grad``.

        Parameters
        ----------
        rows : torch.Tensor, optional
            Row indices (int32 or int64, any shape, repeats allowed).

        Returns
        -------
        torch.Tensor
            The weight.

        Raises
        ------
        IndexError
            If a row index is negative or too large (the weight is left unchanged).

        Examples
        --------
        >>> import torch, caffe2op.torch
        >>> w = torch.tensor([[3.0, 4.0], [0.3, 0.4]])
        >>> caffe2op.torch.RowNormConstraint(w, norm=1.0).apply(torch.tensor([0, 1]))
        tensor([[0.6000, 0.8000],
                [0.3000, 0.4000]])
        """
        if rows is None:
            rows = self.touched_rows()
        with torch.no_grad():
            if torch.compiler.is_compiling():
                torch.ops.caffe2op.sparse_normalize_(self.weight, rows, self.use_max_norm, self.norm)
            else:
                sparse_normalize(self.weight, rows, use_max_norm=self.use_max_norm, norm=self.norm)
        return self.weight

    def attach(self, optimizer):
        """Run :meth:`apply` after every ``optimizer.step()`` (``Optimizer.register_step_post_hook``).

        Parameters
        ----------
        optimizer : torch.optim.Optimizer
            The optimizer that updates the weight.

        Returns
        -------
        torch.utils.hooks.RemovableHandle
            Removes the step hook (see also :meth:`remove`).

        Examples
        --------
        >>> import torch, caffe2op.torch
        >>> emb = torch.nn.Embedding(10, 4, sparse=True)
        >>> opt = torch.optim.SGD(emb.parameters(), lr=0.1)
        >>> handle = caffe2op.torch.RowNormConstraint(emb).attach(opt)
        >>> handle.remove()
        """
        handle = optimizer.register_step_post_hook(lambda opt, args, kwargs: self.apply())
        self._handles.append(handle)
        return handle

    def remove(self):
        """Remove the forward pre-hook and every step hook this constraint registered.

        Examples
        --------
        >>> import torch, caffe2op.torch
        >>> emb = torch.nn.Embedding(10, 4)
        >>> caffe2op.torch.RowNormConstraint(emb).remove()
        """
        for handle in self._handles:
            handle.remove()
        self._handles = []


def _union_over_ranks(rows):
    """Every rank's rows, concatenated (the same tensor on every rank)."""
    dist = torch.distributed
    world = dist.get_world_size()
    count = torch.tensor([rows.numel()], dtype=torch.int64)
    counts = [torch.zeros(1, dtype=torch.int64) for _ in range(world)]
    dist.all_gather(counts, count)
    longest = int(max(c.item() for c in counts))
    padded = torch.full((longest,), -1, dtype=torch.int64)
    padded[: rows.numel()] = rows
    gathered = [torch.empty(longest, dtype=torch.int64) for _ in range(world)]
    dist.all_gather(gathered, padded)
    return torch.cat([g[: int(c.item())] for g, c in zip(gathered, counts, strict=True)])
