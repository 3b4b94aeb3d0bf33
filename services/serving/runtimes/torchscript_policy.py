"""Which TorchScript operators serving runs: an allowlist, checked on every compiled function at load.

A TorchScript file is a program. Serving runs it only if every node of every
function in its compilation unit (every method of every module and class, every
free function, every nested block) is allowed:

- namespaces: only `aten` (tensor math) and `prim` (the compiler's control flow
  and data structures). Custom `torch.ops.<ns>` libraries, `quantized`, `c10d`
  (network), `profiler`, `cuda`... are refused: serving cannot vet their code.
- `prim`: only the node kinds listed in PRIM_ALLOWED. Not listed, so refused:
  `prim::PythonOp` (arbitrary Python), `prim::rpc_*` (network), `prim::fork`,
  calls of a function that is not a compile-time constant of the program.
- `aten`: an operator reaches the outside world (a file, a mapped Storage, a
  remote reference, a stream, a C++ custom class) only through an argument of
  such a type; every operator with such an argument in any overload is refused
  unless it is on ATEN_VETTED (string, container and math operators whose `str`
  argument is a mode or an equation, never a path). `aten::from_file` and
  `aten::save` take a path, so they are refused; so is any such operator a later
  torch adds, until someone vets it.

This runs inside the sandboxed worker (services/serving/runtimes/tensor_worker.py),
after confinement, so even the loading of a hostile file cannot reach the host.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

ALLOWED_NAMESPACES = frozenset({"aten", "prim"})

PRIM_ALLOWED = frozenset(
    "prim::" + kind
    for kind in (
        # values, containers and attributes
        "Constant ListConstruct ListUnpack TupleConstruct TupleUnpack TupleIndex TupleSlice DictConstruct"
        " DictIndex GetAttr SetAttr CreateObject Uninitialized unchecked_cast unchecked_unwrap_optional"
        " isinstance NumToTensor StringIndex rangelist EnumName EnumValue ModuleContainerIndex tolist"
        # control flow and calls into the program's own functions (each is checked too)
        " If Loop CallMethod CallFunction RaiseException Enter Exit"
        # tensor and scalar properties
        " device dtype layout data requires_grad grad itemsize nbytes name type id min max abs index"
        " is_cpu is_cuda is_nested is_sparse is_sparse_csr is_quantized is_mkldnn is_meta is_xla is_xpu"
        " is_vulkan is_ipu is_mps is_maia is_mtia"
        # writes to the worker's stdout, which is discarded
        " Print"
    ).split()
)

# aten operators with a str/Storage/... argument that compute only (the str is a mode, an equation or data).
ATEN_VETTED = frozenset(
    "aten::" + name
    for name in (
        # str methods and comparisons
        "capitalize center count endswith expandtabs find format isalnum isalpha isdecimal isdigit"
        " isidentifier islower isnumeric isprintable isspace istitle isupper join ljust lower lstrip ord"
        " partition percentFormat replace rfind rindex rjust rpartition rsplit rstrip split splitlines"
        " startswith strip swapcase title upper zfill __contains__ __getitem__ add eq ne lt le gt ge len"
        " slice Float Int device warn"
        # lists and dicts (str keys)
        " list dict keys values items get setdefault pop popitem update clear copy Delete _set_item remove"
        " sorted sort index any"
        # math whose str argument names a mode
        " __interpolate __upsample conv1d conv2d conv3d _convolution_mode div div_ divide divide_ einsum"
        " gelu gelu_ pad pad_sequence scatter scatter_ scatter_reduce scatter_reduce_ searchsorted"
        " segment_reduce index_reduce index_reduce_ quantile nanquantile meshgrid stft get_autocast_dtype"
        " fft_fft fft_fft2 fft_fftn fft_hfft fft_hfft2 fft_hfftn fft_ifft fft_ifft2 fft_ifftn fft_ihfft"
        " fft_ihfft2 fft_ihfftn fft_irfft fft_irfft2 fft_irfftn fft_rfft fft_rfft2 fft_rfftn"
        " linalg_cond linalg_eigh linalg_eigvalsh linalg_lstsq linalg_matrix_norm linalg_norm linalg_qr"
        " linalg_svd linalg_svdvals _linalg_eigh _linalg_svd _linalg_check_errors"
        # assertions (the str is the message)
        " _assert_async _assert_scalar _functional_assert_async _functional_assert_scalar"
    ).split()
)

# Argument types through which an operator can reach something outside its tensors.
_OUTWARD_TYPE = re.compile(r"\bstr\b|Storage|RRef|Stream|Future|__torch__\.torch\.classes")


def outward_aten_operators() -> frozenset[str]:
    """aten operators with an argument or result of an outward type in any overload."""
    import torch

    names = set()
    for schema in torch._C._jit_get_all_schemas():
        if not schema.name.startswith("aten::"):
            continue
        if any(_OUTWARD_TYPE.search(str(a.type)) for a in (*schema.arguments, *schema.returns)):
            names.add(schema.name)
    return frozenset(names)


def refused_operators(functions: Iterable, outward: frozenset[str]) -> list[str]:
    """The operators of `functions` (TorchScript functions) serving does not run, sorted; [] when all pass."""
    refused: set[str] = set()
    for function in functions:
        _walk(function.graph.nodes(), outward, refused)
    return sorted(refused)


def _walk(nodes: Iterable, outward: frozenset[str], refused: set[str]) -> None:
    for node in nodes:
        reason = _refusal(node, outward)
        if reason:
            refused.add(reason)
        for block in node.blocks():
            _walk(block.nodes(), outward, refused)


def _refusal(node, outward: frozenset[str]) -> str:
    kind = node.kind()
    namespace = kind.split("::", 1)[0]
    if namespace not in ALLOWED_NAMESPACES:
        return kind
    if namespace == "prim":
        if kind not in PRIM_ALLOWED:
            return kind
        if kind == "prim::CallFunction" and node.inputsAt(0).node().kind() != "prim::Constant":
            return "prim::CallFunction of a function value"  # only the program's own (checked) functions
        if kind == "prim::CallMethod" and "__torch__.torch.classes" in str(node.inputsAt(0).type()):
            return f"prim::CallMethod on {node.inputsAt(0).type()}"  # a C++ custom class
        return ""
    if kind in outward and kind not in ATEN_VETTED:
        return kind
    return ""
