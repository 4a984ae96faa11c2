"""Our Caffe schema (caffe.proto) and its generated module.

`caffe_pb2.py` is generated and committed so that a fresh install needs no protoc; regenerate it
after editing the schema with `python -m grpc_tools.protoc -I replicate/proto
--python_out=replicate/proto replicate/proto/caffe.proto` (grpcio-tools is in the `dev` extra).

Every name a message class serves (`LRNParameter.ACROSS_CHANNELS`, `PoolingParameter.PoolMethod`,
`..._FIELD_NUMBER`, nested messages) is looked up once here, at import.  protobuf's upb runtime
makes them lazily: the class's `__dict__` gets a name only when Python first reads it.  torch.compile
up to torch 2.11 reads class attributes from `__dict__` alone (`inspect.getattr_static`) and, for a
class whose metaclass is not `type`, takes a name it does not find there for None without a word.
So a layer whose forward was traced before any eager code had read such a name compared against
None: SoftmaxWithLoss lost its normalizer (the loss became the batch's sum) and LRN took the
WITHIN_CHANNEL branch.  With every name in `__dict__` from the start, what torch.compile reads is
what Python reads, on every torch version (tests/test_proto_enums.py).
"""

from __future__ import annotations

from google.protobuf.descriptor import Descriptor

from replicate.proto import caffe_pb2

__all__ = ["caffe_pb2"]


def _resolve_class_names(cls: type, descriptor: Descriptor) -> None:
    """Read every enum value, enum type, field number and nested message `cls` serves, recursively,
    so that each is in its class `__dict__`."""
    for enum in descriptor.enum_types:
        getattr(cls, enum.name)
        for value in enum.values:
            getattr(cls, value.name)
    for field in (*descriptor.fields, *descriptor.extensions):
        getattr(cls, f"{field.name.upper()}_FIELD_NUMBER")
    for nested in descriptor.nested_types:
        _resolve_class_names(getattr(cls, nested.name), nested)


for _message in caffe_pb2.DESCRIPTOR.message_types_by_name.values():
    _resolve_class_names(getattr(caffe_pb2, _message.name), _message)
