"""`python -m replicate ...`: see replicate.cli.

A crash in native code (a segfault, or an abort such as a C++ `std::terminate` in a
communication library) prints every thread's Python stack to stderr before the process dies,
as `caffe train` prints its stack through glog's failure signal handler: on a cluster, the job's
log then says where a trainer died instead of only its exit status.
"""

import faulthandler
import sys

from replicate.cli import main

faulthandler.enable()
sys.exit(main())
