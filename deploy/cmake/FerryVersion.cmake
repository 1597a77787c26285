# Writes fy_version.h with the current git commit. Run at every build (not
# just at configure time) so --version names the commit the binary was
# actually built from; the file is rewritten only when its content changes.
execute_process(COMMAND git -C ${SRC} describe --always --dirty --abbrev=12
                OUTPUT_VARIABLE FERRY_GIT_REV OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
if(NOT FERRY_GIT_REV)
  set(FERRY_GIT_REV "unknown")
endif()
configure_file(${SRC}/common/version.h.in ${OUT} @ONLY)
