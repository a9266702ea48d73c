# Checkpoints read back with plain h5py (tests/ckpt_h5py.py): layout,
# manifest, parameters equal to the run's model.h5; a dp=2 checkpoint's
# virtual datasets over its two rank files, from another working directory
# and after renaming the checkpoint directory.
add_test(NAME ckpt_h5py
  COMMAND ${GML_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/ckpt_h5py.py $<TARGET_FILE:gml-dist>
          ${CMAKE_CURRENT_BINARY_DIR}/ckpt_h5py ${MPIEXEC_EXECUTABLE})
set_tests_properties(ckpt_h5py PROPERTIES LABELS "cpu;mpi" RUN_SERIAL TRUE TIMEOUT 120
  PASS_REGULAR_EXPRESSION "CKPT H5PY OK"
  ENVIRONMENT "OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1;OMPI_MCA_rmaps_base_oversubscribe=1")
