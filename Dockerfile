# An image laid out like Gradescope's autograder: /autograder/source holds this repository,
# /autograder/submission the student's files, /autograder/run_autograder the entry point.
#   docker build -t mp-grader .
#   docker run --rm -v "$PWD/submission:/autograder/submission:ro" -v "$PWD/results:/autograder/results" mp-grader
FROM ubuntu:24.04
ENV DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1
COPY requirements.txt setup.sh /autograder/source/
RUN bash /autograder/source/setup.sh
COPY grader /autograder/source/grader
COPY reference_data /autograder/source/reference_data
COPY run_autograder /autograder/run_autograder
COPY run_autograder /autograder/source/run_autograder
WORKDIR /autograder
CMD ["/autograder/run_autograder"]
