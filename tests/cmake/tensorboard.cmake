# TensorBoard event files: tb_write_fixture (C, through launcher/tb_writer and
# launcher/metrics) writes known scalars into a temporary directory, then
# tests/tb_read.py loads them with TensorBoard's own EventAccumulator and
# compares tags, steps, values and wall times with values it recomputes from
# the same formulas, and checks metrics.jsonl with Python's json module.
# GML_PYTHON must have the `tensorboard` package (CI passes
# -DGML_PYTHON=/work/main/.venv/bin/python); without it the test FAILS.
add_executable(tb_write_fixture ${CMAKE_CURRENT_SOURCE_DIR}/tb_write_fixture.c)
target_link_libraries(tb_write_fixture PRIVATE gml)
target_compile_options(tb_write_fixture PRIVATE -Wall -Wextra -Werror)

add_test(NAME tensorboard_read
  COMMAND ${GML_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/tb_read.py --fixture $<TARGET_FILE:tb_write_fixture>)
set_tests_properties(tensorboard_read PROPERTIES LABELS cpu TIMEOUT 300)
