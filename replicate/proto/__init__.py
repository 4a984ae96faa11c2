"""Our Caffe schema (caffe.proto) and its generated module.

`caffe_pb2.py` is generated and committed so that a fresh install needs no protoc; regenerate it
after editing the schema with `python -m grpc_tools.protoc -I replicate/proto
--python_out=replicate/proto replicate/proto/caffe.proto` (grpcio-tools is in the `dev` extra).
"""

from replicate.proto import caffe_pb2

__all__ = ["caffe_pb2"]
