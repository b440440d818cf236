console.log("trainer placeholder");
