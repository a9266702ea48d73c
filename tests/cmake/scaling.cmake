# The scaling benchmark script (bench/scaling.sh) on CPU ranks under mpirun:
# every row of its table present and well formed, settings of extra rows
# reaching the ranks, bad arguments refused (tests/scaling_check.sh).
add_test(NAME bench_scaling_cpu
  COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/scaling_check.sh $<TARGET_FILE:gml-dist> ${CMAKE_SOURCE_DIR}
          ${CMAKE_CURRENT_BINARY_DIR}/bench_scaling)
set_tests_properties(bench_scaling_cpu PROPERTIES LABELS "cpu;mpi" RUN_SERIAL TRUE TIMEOUT 300
  PASS_REGULAR_EXPRESSION "SCALING OK" FAIL_REGULAR_EXPRESSION "FAIL:"
  ENVIRONMENT "GML_MPIEXEC=${MPIEXEC_EXECUTABLE};OMP_NUM_THREADS=1;OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1;OMPI_MCA_rmaps_base_oversubscribe=1")
