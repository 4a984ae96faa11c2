"""Caffe file formats: prototxt text, .caffemodel / .solverstate / .binaryproto, legacy upgrade."""
