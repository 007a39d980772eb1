"""The baseline a Triton user would build instead of the mesh, and the in-process floor (``mesh_vs_ensemble``).

- ``models/``: a Triton ensemble doing the mesh's JPEG → top-5 job: the python-backend ``ensemble_preprocess`` (2
  instances; the mesh preprocess's own ``prepare_image``) → the same ``mobilenet_v2`` the mesh uses, referenced by
  name → the python-backend ``ensemble_postprocess`` (the mesh postprocess's own ``top_k``).
- :mod:`.repository` loads them into the bench's running tritonserver through its repository API;
- :mod:`.floor`: decode → preprocess → the same ONNX file → top-5 in one process, with 1 and 2 worker threads;
- :mod:`.runner` runs the scenario, :mod:`.report` turns its result into summary keys, targets, a section, a plot.
"""
