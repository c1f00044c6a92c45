# The vsock half of the harness (included from tests/harness/CMakeLists.txt): moss-vsock as a
# process, a virtio-vsock driver, and the acceptance test against moss-vsock (issue 5, the
# worker halves of acceptance 4 and 5). Host-only, no KVM. The bench (bench/vsock) uses the
# library too.
add_library(moss_vsock_harness STATIC ${CMAKE_CURRENT_LIST_DIR}/vsock_process.cc ${CMAKE_CURRENT_LIST_DIR}/vsock_driver.cc)
target_link_libraries(moss_vsock_harness PUBLIC moss_harness moss_vsock_testing moss_vsock)

add_executable(vsock_acceptance_test ${CMAKE_CURRENT_LIST_DIR}/vsock_acceptance_test.cc)
target_link_libraries(vsock_acceptance_test PRIVATE moss_vsock_harness GTest::gtest_main Threads::Threads)
if(TARGET moss-vsock)
  add_dependencies(vsock_acceptance_test moss-vsock)
  target_compile_definitions(vsock_acceptance_test PRIVATE MOSS_EXPECT_VSOCK_WORKER=1)
endif()
gtest_discover_tests(vsock_acceptance_test
                     PROPERTIES ENVIRONMENT MOSS_BUILD_DIR=${CMAKE_BINARY_DIR} TIMEOUT 60 LABELS harness)

# moss-vsock jailed as the broker starts it (spawn_child, jail::vsock) with MOSS_SECCOMP_TRAP=1:
# connections both ways, refusals, its one kept directory, a clean exit (host-only).
add_executable(vsock_jail_test ${CMAKE_CURRENT_LIST_DIR}/vsock_jail_test.cc)
target_link_libraries(vsock_jail_test PRIVATE moss_vsock_harness moss_broker GTest::gtest_main Threads::Threads)
if(TARGET moss-vsock)
  add_dependencies(vsock_jail_test moss-vsock)
  target_compile_definitions(vsock_jail_test PRIVATE MOSS_EXPECT_VSOCK_WORKER=1)
endif()
gtest_discover_tests(vsock_jail_test
                     PROPERTIES ENVIRONMENT MOSS_BUILD_DIR=${CMAKE_BINARY_DIR} TIMEOUT 60 LABELS harness)
