# The PyPI wheels' exported targets name the include folder of the interpreter they were built with
# (/opt/python/cp311-cp311/...), which no machine but the wheel builder has: point them at this interpreter's.
find_package(Python3 REQUIRED COMPONENTS Development.Module)
get_property(imported_targets DIRECTORY PROPERTY IMPORTED_TARGETS)
foreach(target ${imported_targets})
  get_target_property(includes ${target} INTERFACE_INCLUDE_DIRECTORIES)
  if(includes AND includes MATCHES "/opt/python/")
    list(FILTER includes EXCLUDE REGEX "^/opt/python/")
    list(APPEND includes ${Python3_INCLUDE_DIRS})
    set_target_properties(${target} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${includes}")
  endif()
endforeach()
