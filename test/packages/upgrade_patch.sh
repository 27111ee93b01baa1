# An upgrade during a patch run (test/packages): the package installed,
# the worker pointed at patchbed, a host apply held in the fake apt-get,
# then the upgrade to the rebuilt package restarts our services while the
# run goes on in its transient unit. Sourced with test/nspawn's lib.sh,
# after test/patchbed's steps; booted_test.go judges every result.

record install dpkg -i /root/pkgs/@V1@ || fail "install"
patch_hold apply
record upgrade dpkg -i /root/pkgs/@V2@
record version dpkg-query -W -f '${Version}' nannyagent
patch_restarted
patch_release
record journal journalctl -b --no-pager -o short-monotonic -u 'nannyagent-*'
