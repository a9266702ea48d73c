# Token datasets from `gml-dist prep` read with plain h5py
# (tests/prep_h5py.py): attributes, dtypes, split sizes, and the decoded
# tokens equal to the input text as Python concatenates it.
add_test(NAME prep_h5py
  COMMAND ${GML_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/prep_h5py.py $<TARGET_FILE:gml-dist> ${CMAKE_SOURCE_DIR})
set_tests_properties(prep_h5py PROPERTIES LABELS cpu TIMEOUT 120 PASS_REGULAR_EXPRESSION "PREP H5PY OK")
