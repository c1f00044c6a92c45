# The vsock half of the harness (included from tests/harness/CMakeLists.txt): moss-vsock as a
# process, a virtio-vsock driver, and the acceptance test against moss-vsock (issue 5, the
# worker halves of acceptance 4 and 5). Host-only, no KVM. The bench (bench/vsock) uses the
# library too.
add_library(moss_vsock_harness STATIC ${CMAKE_CURRENT_LIST_DIR}/vsock_process.cc ${CMAKE_CURRENT_LIST_DIR}/vsock_driver.cc)
target_link_libraries(moss_vsock_harness PUBLIC moss_harness moss_vsock_testing moss_vsock)

moss_harness_test(vsock_acceptance_test moss-vsock MOSS_EXPECT_VSOCK_WORKER moss_vsock_harness)

# moss-vsock jailed as the broker starts it (spawn_child, the vsock module's limits) with MOSS_SECCOMP_TRAP=1:
# connections both ways, refusals, its one kept directory, a clean exit (host-only).
moss_harness_test(vsock_jail_test moss-vsock MOSS_EXPECT_VSOCK_WORKER moss_vsock_harness moss_broker)

# A hostile frontend against both workers (the security review's finding 5): fds that are not
# eventfds, unsealed guest memory, half a message held open, SIGTERM meanwhile, and (moss-blk)
# device state that never drains or trickles in.
moss_harness_test(hostile_frontend_test moss-vsock MOSS_EXPECT_VSOCK_WORKER moss_vsock_harness)
if(TARGET moss-blk)
  add_dependencies(hostile_frontend_test moss-blk)
endif()
