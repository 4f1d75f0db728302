"""OpenCL C sources of caffe2op's device kernels (installed as ``caffe2op._cl``).

Each ``.cl`` file compiles on its own; dtype variants come from ``-D`` build
options.  The device layer finds this folder with :mod:`importlib.resources`.
"""
