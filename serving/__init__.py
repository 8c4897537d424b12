"""Serving operations on a written repository: run the real Triton server on this machine
(triton_server.py, `make serve`) and the end-to-end demo (demo.py, `make demo`)."""
