# PyTorch parity: the full GPT loss and every parameter gradient of the CPU
# backend against an independent PyTorch model (tests/torch_parity.py), with
# and without activation recompute, and with dropout (masks redrawn in numpy).
add_executable(parity_dump ${CMAKE_CURRENT_SOURCE_DIR}/parity_dump.c)
target_link_libraries(parity_dump PRIVATE gml)
foreach(rc 0 1)
  add_test(NAME torch_parity_recompute${rc}
    COMMAND sh -c "$<TARGET_FILE:parity_dump> ${CMAKE_CURRENT_BINARY_DIR}/parity${rc}.h5 ${rc} && ${GML_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/torch_parity.py ${CMAKE_CURRENT_BINARY_DIR}/parity${rc}.h5")
  set_tests_properties(torch_parity_recompute${rc} PROPERTIES LABELS cpu TIMEOUT 300
    PASS_REGULAR_EXPRESSION "PARITY OK")
endforeach()
add_test(NAME torch_parity_dropout
  COMMAND sh -c "$<TARGET_FILE:parity_dump> ${CMAKE_CURRENT_BINARY_DIR}/parity_dropout.h5 0 0.3 && ${GML_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/torch_parity.py ${CMAKE_CURRENT_BINARY_DIR}/parity_dropout.h5")
set_tests_properties(torch_parity_dropout PROPERTIES LABELS cpu TIMEOUT 300 PASS_REGULAR_EXPRESSION "PARITY OK \\(dropout")
