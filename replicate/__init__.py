"""replicate: a Caffe-faithful harness for Yosinski et al. (NIPS 2014), on PyTorch.

Data flows one way: prototxt -> NetParameter -> compiled module -> solver loop -> logs and
snapshots -> results.  Each stage is a subpackage; lower ones never import higher ones.
"""

__version__ = "0.1.0"
