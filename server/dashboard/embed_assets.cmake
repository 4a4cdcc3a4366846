# Turns the dashboard's files into dashboard_assets.cc (server/dashboard_assets.h), run at build
# time: cmake -DOUTPUT=file.cc -DASSETS="a;b" -P embed_assets.cmake
set(body "")
set(entries "")
set(i 0)
foreach(asset ${ASSETS})
  get_filename_component(name ${asset} NAME)
  get_filename_component(ext ${asset} LAST_EXT)
  if(ext STREQUAL ".html")
    set(type "text/html; charset=utf-8")
  elseif(ext STREQUAL ".js")
    set(type "text/javascript; charset=utf-8")
  elseif(ext STREQUAL ".css")
    set(type "text/css; charset=utf-8")
  elseif(ext STREQUAL ".svg")
    set(type "image/svg+xml")
  else()
    message(FATAL_ERROR "embed_assets: no content type for ${name}")
  endif()
  file(READ ${asset} hex HEX)
  string(LENGTH "${hex}" hex_length)
  math(EXPR size "${hex_length} / 2")
  string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
  string(APPEND body "const unsigned char kAsset${i}[] = {${bytes}0x00};\n")
  string(APPEND entries "      {\"/${name}\", \"${type}\", kAsset${i}, ${size}},\n")
  math(EXPR i "${i} + 1")
endforeach()
file(WRITE ${OUTPUT}.tmp
  "// Generated from server/dashboard/ by embed_assets.cmake. Do not edit.\n"
  "#include \"server/dashboard_assets.h\"\n\n"
  "namespace fp8d {\nnamespace {\n${body}}  // namespace\n\n"
  "const std::vector<DashboardAsset>& DashboardAssets() {\n"
  "  static const auto* kAssets = new std::vector<DashboardAsset>{\n${entries}  };\n"
  "  return *kAssets;\n}\n\n}  // namespace fp8d\n")
file(COPY_FILE ${OUTPUT}.tmp ${OUTPUT} ONLY_IF_DIFFERENT)
file(REMOVE ${OUTPUT}.tmp)
