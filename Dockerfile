# An image laid out like Gradescope's autograder: /autograder/source holds the autograder (this folder, less
# what .dockerignore leaves out), /autograder/run_autograder is the entry point, and /autograder/submission
# and /autograder/results are mounted at run time. `make docker-grade` builds and runs it; by hand:
#   docker build -t mp-grader .
#   docker run --rm --cpus 0.5 --memory 768m --network none -v "$PWD/submission:/autograder/submission:ro" \
#       -v "$PWD/results:/autograder/results" mp-grader /autograder/run_autograder
# BASE: Gradescope's default base image; ubuntu:24.04 and debian:bookworm work too (setup.sh handles each).
# TORCH_INDEX: the wheel index torch comes from (default: CPU builds, several GB smaller and far lighter in
# memory); https://download.pytorch.org/whl/cu130 for CUDA, or empty for PyPI's (CUDA) wheels.
ARG BASE=ubuntu:22.04
FROM ${BASE}
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1
# build-ca/: certificate authorities pip must trust besides the image's own (a proxy's, say); usually
# empty. The install comes first so that editing the grader does not reinstall torch.
COPY requirements.txt setup.sh /autograder/source/
COPY build-ca/ /usr/local/share/ca-certificates/
RUN TORCH_INDEX="$TORCH_INDEX" bash /autograder/source/setup.sh
COPY . /autograder/source/
# Closed once, here: the grader never changes modes while it grades, and refuses when it finds these open.
RUN cp /autograder/source/run_autograder /autograder/run_autograder && chmod 755 /autograder/run_autograder \
    && chmod 700 /autograder/source
WORKDIR /autograder
CMD ["/autograder/run_autograder"]
